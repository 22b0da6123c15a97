//! Test plugin: panics inside `authenticate` for path `/panic` (and in `init`
//! when the configuration holds `"panic_in_init"`, and in every `reload`), to
//! prove panics stay on the plugin's side of the boundary and the instance
//! keeps serving.

use container_gateway_plugin_abi::{AuthPlugin, Decision, Identity, Logger, Request};

pub struct Panicky;

impl AuthPlugin for Panicky {
    const NAME: &'static std::ffi::CStr = c"panicky-plugin";

    fn init(config_json: &str, _log: Logger) -> Result<Self, String> {
        if config_json.contains("panic_in_init") {
            panic!("asked to panic in init");
        }
        Ok(Panicky)
    }

    fn authenticate(&self, request: &Request<'_>) -> Decision {
        match request.path() {
            Some("/panic") => panic!("asked to panic for {}", request.method().unwrap_or("?")),
            Some("/panic-any") => std::panic::panic_any(42_u32),
            _ => Decision::Allow(Identity::User("survivor".to_owned())),
        }
    }

    const RELOADS: bool = true;

    fn reload(&self, _config_json: &str) -> Result<(), String> {
        panic!("asked to panic in reload");
    }
}

container_gateway_plugin_abi::export_auth_plugin!(Panicky);
