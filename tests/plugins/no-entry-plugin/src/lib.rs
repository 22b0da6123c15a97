//! Test shared object: loads fine, but is not a plugin (no entry symbol).

/// Something exported, so the library is not empty.
#[unsafe(no_mangle)]
pub extern "C" fn not_a_container_gateway_plugin() -> u32 {
    7
}
