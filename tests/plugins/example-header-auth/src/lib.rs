//! An authentication plugin as a third party would write one, against the
//! published ABI crate only: `Authorization: Example <login>` is user
//! `<login>`; an empty login is refused; anything else is someone else's
//! business.

use container_gateway_plugin_abi::{AuthPlugin, Decision, Identity, Level, Logger, Request};

pub struct ExampleHeaderAuth {
    log: Logger,
}

impl AuthPlugin for ExampleHeaderAuth {
    const NAME: &'static std::ffi::CStr = c"example-header-auth";

    fn init(config_json: &str, log: Logger) -> Result<Self, String> {
        log.log_fmt(
            Level::Info,
            format_args!(
                "example-header-auth ready ({} bytes of settings)",
                config_json.len()
            ),
        );
        Ok(ExampleHeaderAuth { log })
    }

    fn authenticate(&self, request: &Request<'_>) -> Decision {
        let Some(login) = request
            .authorization()
            .and_then(|h| h.strip_prefix("Example "))
        else {
            return Decision::Abstain;
        };
        let login = login.trim();
        if login.is_empty() {
            return Decision::Deny("empty login in Example authorization".to_owned());
        }
        self.log.log_fmt(
            Level::Debug,
            format_args!(
                "{} {} as {login}",
                request.method().unwrap_or("?"),
                request.path().unwrap_or("?")
            ),
        );
        Decision::Allow(Identity::User(login.to_owned()))
    }
}

container_gateway_plugin_abi::export_auth_plugin!(ExampleHeaderAuth);
