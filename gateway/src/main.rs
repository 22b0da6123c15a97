use clap::Parser;
use container_gateway::cli::{Cli, Command};
use container_gateway::explain::command::Who;
use container_gateway::{demo, explain, run};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve { config } => run::serve(&config),
        Command::CheckConfig { config } => run::check_config(&config),
        Command::Demo { port, plugins_dir } => demo::run(port, plugins_dir),
        Command::ImportSettings(args) => container_gateway::import::run(&args),
        Command::Migrate(args) => container_gateway::migrate::run(&args),
        Command::Explain {
            config,
            host,
            user,
            anonymous: _,
            json,
            arch,
        } => {
            let who = match (host, user) {
                (Some(h), _) => Who::Host(h),
                (None, Some(u)) => Who::User(u),
                (None, None) => Who::Anonymous,
            };
            explain::command::run(&config, who, json, &arch)
        }
    };
    std::process::exit(code);
}
