use clap::Parser;
use container_gateway::cli::{Cli, Command};
use container_gateway::{demo, run};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve { config } => run::serve(&config),
        Command::CheckConfig { config } => run::check_config(&config),
        Command::Demo { port, plugins_dir } => demo::run(port, plugins_dir),
    };
    std::process::exit(code);
}
