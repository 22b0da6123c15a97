/* The minimal C plugin of plugins/abi/README.md, kept identical to it:
 * tests/tests/plugins.rs builds it against the header and loads it. */
#include <stdlib.h>
#include <string.h>
#include "container_gateway_auth.h"

static uint32_t init(const cg_host *host, cg_str config, void **out, cg_buf *err) {
    (void)host; (void)config; (void)err;
    *out = NULL; /* stateless */
    return CG_AUTH_OK;
}

static cg_buf text(const char *s) {
    size_t n = strlen(s);
    cg_buf b = { malloc(n), n, n };
    if (b.ptr) memcpy(b.ptr, s, n); else b.len = b.cap = 0;
    return b;
}

static uint32_t authenticate(const void *inst, const cg_auth_request *req, cg_buf *out) {
    (void)inst;
    static const char prefix[] = "Example ";
    cg_str a = req->authorization;
    if (a.ptr == NULL || a.len <= sizeof prefix - 1 || memcmp(a.ptr, prefix, sizeof prefix - 1) != 0)
        return CG_AUTH_ABSTAIN;
    *out = text("{\"kind\":\"user\",\"id\":\"someone\"}"); /* real code: escape the login */
    return out->ptr ? CG_AUTH_ALLOW : CG_AUTH_ERROR;
}

static void free_buf(cg_buf b) { free(b.ptr); }
static void destroy(void *inst) { (void)inst; }

static const cg_auth_plugin_v1 TABLE = {
    CG_AUTH_ABI_VERSION, sizeof(cg_auth_plugin_v1), "c-example",
    init, authenticate, free_buf, destroy,
    0,    /* flags: CG_AUTH_FLAG_NON_BLOCKING would let the gateway call it inline */
    NULL, /* reload: nothing to re-read on SIGHUP */
};

const cg_auth_plugin_v1 *container_gateway_auth_plugin_v1(void) { return &TABLE; }
