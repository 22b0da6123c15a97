//! The one table a run prints, and the machine it ran on.

pub struct Row {
    target: u32,
    what: String,
    goal: String,
    measured: String,
    ratio: String,
    met: Option<bool>,
}

impl Row {
    /// A throughput measured against a baseline in the same run.
    pub fn ratio(
        target: u32,
        what: &str,
        goal: &str,
        measured: &str,
        ratio: f64,
        at_least: f64,
    ) -> Row {
        Row {
            target,
            what: what.into(),
            goal: goal.into(),
            measured: measured.into(),
            ratio: format!("{ratio:.2}"),
            met: Some(ratio >= at_least),
        }
    }

    /// A quantity that must stay under a limit; the ratio is value / limit.
    pub fn limit(target: u32, what: &str, goal: &str, value: f64, below: f64, unit: &str) -> Row {
        Row::limit_with(
            target,
            what,
            goal,
            value,
            below,
            &format!("{value:.1} {unit}"),
        )
    }

    pub fn limit_with(
        target: u32,
        what: &str,
        goal: &str,
        value: f64,
        below: f64,
        measured: &str,
    ) -> Row {
        Row {
            target,
            what: what.into(),
            goal: goal.into(),
            measured: measured.into(),
            ratio: format!("{:.2} of limit", value / below),
            met: Some(value < below),
        }
    }

    /// A count that must come out exactly.
    pub fn exact(target: u32, what: &str, goal: &str, measured: &str, met: bool) -> Row {
        Row {
            target,
            what: what.into(),
            goal: goal.into(),
            measured: measured.into(),
            ratio: "-".into(),
            met: Some(met),
        }
    }

    /// The measurement could not be made.
    pub fn failed(target: u32, error: &str) -> Row {
        Row {
            target,
            what: "(not measured)".into(),
            goal: String::new(),
            measured: format!("error: {}", error.replace('\n', " ").replace('|', "/")),
            ratio: "-".into(),
            met: None,
        }
    }

    pub fn is_error(&self) -> bool {
        self.met.is_none()
    }
}

pub fn render(rows: &[Row]) -> String {
    let mut out =
        String::from("| # | target | goal | measured | ratio | met |\n|---|---|---|---|---|---|\n");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "error",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.target, r.what, r.goal, r.measured, r.ratio, met
        ));
    }
    out
}

/// One line naming the machine: CPU model, cores, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("machine: {model}, {cores} cores, Linux {}", kernel.trim())
}
