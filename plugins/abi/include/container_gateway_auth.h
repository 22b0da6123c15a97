/*
 * container-gateway authentication plugin ABI, major version 1.
 *
 * The same ABI as the Rust crate container-gateway-plugin-abi; see its
 * README.md for ownership, threading and versioning rules. A plugin is a
 * shared object exporting exactly one function:
 *
 *     const cg_auth_plugin_v1 *container_gateway_auth_plugin_v1(void);
 */
#ifndef CONTAINER_GATEWAY_AUTH_H
#define CONTAINER_GATEWAY_AUTH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CG_AUTH_ABI_VERSION 1u
#define CG_AUTH_ENTRY_SYMBOL "container_gateway_auth_plugin_v1"

/* Status codes (init, authenticate, reload). 0 is not a status. */
#define CG_AUTH_ALLOW 1u   /* out: identity document (kind host, user or anonymous) */
#define CG_AUTH_TOKEN 2u   /* out: {"kind":"token","sha256":"<64 lowercase hex>"} */
#define CG_AUTH_DENY 3u    /* out: UTF-8 reason (optional) -> HTTP 401 */
#define CG_AUTH_ABSTAIN 4u /* out: empty; the next plugin decides */
#define CG_AUTH_ERROR 5u   /* out: UTF-8 message (optional) -> HTTP 503 */
#define CG_AUTH_PANIC 6u   /* like ERROR, after a caught crash of the plugin's runtime */
#define CG_AUTH_OK 7u      /* init or reload succeeded */

/* Log levels for cg_host.log. */
#define CG_LOG_ERROR 1u
#define CG_LOG_WARN 2u
#define CG_LOG_INFO 3u
#define CG_LOG_DEBUG 4u
#define CG_LOG_TRACE 5u

/* Borrowed bytes, no NUL terminator. ptr == NULL means absent. */
typedef struct cg_str {
    const uint8_t *ptr;
    size_t len;
} cg_str;

/* Bytes the plugin allocated; returned to the plugin's free_buf once.
 * cap is the plugin's own field: the host passes it back untouched. */
typedef struct cg_buf {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} cg_buf;

/* Host services, valid and thread-safe for the life of the process. */
typedef struct cg_host {
    uint32_t struct_size;
    const void *context;
    void (*log)(const void *context, uint32_t level, cg_str msg);
    uint32_t (*log_enabled)(const void *context, uint32_t level);
} cg_host;

/* One request, borrowed for the duration of authenticate. Read a field only
 * if offsetof(field) + sizeof(field) <= struct_size. */
typedef struct cg_auth_request {
    uint32_t struct_size;
    const cg_str *tls_chain; /* DER certificates, leaf first; NULL if none */
    size_t tls_chain_len;
    cg_str forwarded_cert; /* DER from a trusted frontend, or absent */
    cg_str authorization;  /* raw Authorization header, or absent */
    cg_str method;
    cg_str path;
    cg_str peer; /* "ip:port", or absent */
} cg_auth_request;

typedef struct cg_auth_plugin_v1 {
    uint32_t abi_version; /* CG_AUTH_ABI_VERSION */
    uint32_t struct_size; /* sizeof(cg_auth_plugin_v1) as built */
    const char *name;     /* static, NUL-terminated */
    uint32_t (*init)(const cg_host *host, cg_str config_json, void **out_instance, cg_buf *out_error);
    uint32_t (*authenticate)(const void *instance, const cg_auth_request *request, cg_buf *out);
    void (*free_buf)(cg_buf buf);
    void (*destroy)(void *instance);
    /* Appended in 1.1 (a table built without it, struct_size 48, still loads
     * and counts as flags 0). */
    uint64_t flags;       /* CG_AUTH_FLAG_* bits */
    /* Appended in 1.2, optional (NULL, or a table of struct_size 48 or 56:
     * the plugin does not reload). Called on SIGHUP with the config_json init
     * got: re-read files, return CG_AUTH_OK once the new state serves, or
     * CG_AUTH_ERROR/CG_AUTH_PANIC with a message in *out_error having kept
     * the old state whole. Runs while authenticate calls on the same instance
     * are in flight on other threads: switch state atomically. Never two at
     * once on one instance, never concurrent with init or destroy; called off
     * the request path, may block, not timed out. */
    uint32_t (*reload)(const void *instance, cg_str config_json, cg_buf *out_error);
} cg_auth_plugin_v1;

/* authenticate never waits (no I/O, no sleeping, no long-held locks): the
 * host may call it on the thread serving the request. */
#define CG_AUTH_FLAG_NON_BLOCKING ((uint64_t)1 << 0)

const cg_auth_plugin_v1 *container_gateway_auth_plugin_v1(void);

#if defined(__LP64__) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(cg_str) == 16, "cg_str layout");
_Static_assert(sizeof(cg_buf) == 24, "cg_buf layout");
_Static_assert(sizeof(cg_host) == 32, "cg_host layout");
_Static_assert(sizeof(cg_auth_request) == 104, "cg_auth_request layout");
_Static_assert(offsetof(cg_auth_request, peer) == 88, "cg_auth_request layout");
_Static_assert(sizeof(cg_auth_plugin_v1) == 64, "cg_auth_plugin_v1 layout");
_Static_assert(offsetof(cg_auth_plugin_v1, flags) == 48, "cg_auth_plugin_v1 layout");
_Static_assert(offsetof(cg_auth_plugin_v1, reload) == 56, "cg_auth_plugin_v1 layout");
_Static_assert(offsetof(cg_auth_plugin_v1, destroy) == 40, "cg_auth_plugin_v1 layout");
#endif

#ifdef __cplusplus
}
#endif

#endif /* CONTAINER_GATEWAY_AUTH_H */
