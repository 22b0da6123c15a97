//! Test plugin: exports the v1 entry symbol, but its table claims ABI version 2.

use container_gateway_plugin_abi::CgAuthPluginV1;

static TABLE: CgAuthPluginV1 = CgAuthPluginV1 {
    abi_version: 2,
    struct_size: size_of::<CgAuthPluginV1>() as u32,
    name: c"wrong-abi-plugin".as_ptr(),
    init: None,
    authenticate: None,
    free_buf: None,
    destroy: None,
    flags: 0,
    reload: None,
};

/// The entry point, returning a table of the wrong version.
#[unsafe(no_mangle)]
pub extern "C" fn container_gateway_auth_plugin_v1() -> *const CgAuthPluginV1 {
    &TABLE
}
