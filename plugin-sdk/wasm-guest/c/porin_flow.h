/* porin_flow.h: write Porin flow filters in C (porin:flow@0.1.0).
 *
 * The contract is the WIT package porin:flow (plugin-sdk/wasm-abi/wit); this
 * header hides its core-module encoding (offsets below, checked against the
 * Rust crate porin-wasm-abi by a test). A filter:
 *
 *   #include "porin_flow.h"
 *   static int keep(const porin_flow *f) { return porin_verdict(f) == PORIN_VERDICT_DROPPED; }
 *   PORIN_FILTER(keep)
 *
 * Build:
 *   clang-19 --target=wasm32 -O2 -nostdlib -I plugin-sdk/wasm-guest/c \
 *     -Wl,--no-entry -Wl,--export-dynamic -o keep.wasm keep.c
 * (clang-19 links with wasm-ld-19.)
 */
#ifndef PORIN_FLOW_H
#define PORIN_FLOW_H

#include <stdint.h>
#include <stddef.h>

#define PORIN_KIND_FILTER 1
#define PORIN_KIND_LABELLER 2

/* Batch header. */
#define PORIN_HEADER_COUNT 0
#define PORIN_HEADER_RECORD_SIZE 4
#define PORIN_HEADER_RECORDS 8
#define PORIN_HEADER_RESULTS 12
#define PORIN_HEADER_LENGTH 16
#define PORIN_HEADER_SIZE 24

/* Flow record. */
#define PORIN_RECORD_TIME_NS 0
#define PORIN_RECORD_DROP_REASON 8
#define PORIN_RECORD_VERDICT 12
#define PORIN_RECORD_DIRECTION 13
#define PORIN_RECORD_IP_VERSION 14
#define PORIN_RECORD_PROTOCOL 15
#define PORIN_RECORD_SOURCE_PORT 16
#define PORIN_RECORD_DESTINATION_PORT 18
#define PORIN_RECORD_TCP_FLAGS 20
#define PORIN_RECORD_IS_REPLY 22
#define PORIN_RECORD_L7 23
#define PORIN_RECORD_SOURCE_IP 24
#define PORIN_RECORD_DESTINATION_IP 40
#define PORIN_RECORD_SOURCE_IDENTITY 56
#define PORIN_RECORD_DESTINATION_IDENTITY 60
#define PORIN_RECORD_DNS_RCODE 64
#define PORIN_RECORD_HTTP_CODE 68
#define PORIN_RECORD_SOURCE 72
#define PORIN_RECORD_DESTINATION 120
#define PORIN_RECORD_NODE 168
#define PORIN_RECORD_DNS_QUERY 176
#define PORIN_RECORD_HTTP_METHOD 184
#define PORIN_RECORD_HTTP_URL 192
#define PORIN_RECORD_SIZE 200

/* Endpoint strings, relative to PORIN_RECORD_SOURCE / _DESTINATION. */
#define PORIN_ENDPOINT_NAMESPACE 0
#define PORIN_ENDPOINT_POD 8
#define PORIN_ENDPOINT_WORKLOAD 16
#define PORIN_ENDPOINT_WORKLOAD_KIND 24
#define PORIN_ENDPOINT_LABELS 32
#define PORIN_ENDPOINT_NAMES 40

#define PORIN_VERDICT_FORWARDED 1
#define PORIN_VERDICT_DROPPED 2
#define PORIN_DIRECTION_INGRESS 1
#define PORIN_DIRECTION_EGRESS 2
#define PORIN_L7_NONE 0
#define PORIN_L7_DNS 1
#define PORIN_L7_HTTP 2
#define PORIN_TCP_FIN 1
#define PORIN_TCP_SYN 2
#define PORIN_TCP_RST 4
#define PORIN_TCP_ACK 16

/* One flow of a batch: valid during the call. */
typedef struct {
    const uint8_t *batch;
    const uint8_t *rec;
} porin_flow;

/* A string in the batch (not NUL-terminated). */
typedef struct {
    const char *ptr;
    uint32_t len;
} porin_str;

static inline uint32_t porin__u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint16_t porin__u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline porin_str porin__str(const porin_flow *f, int field) {
    porin_str s = {(const char *)f->batch + porin__u32(f->rec + field), porin__u32(f->rec + field + 4)};
    return s;
}

static inline uint8_t porin_verdict(const porin_flow *f) { return f->rec[PORIN_RECORD_VERDICT]; }
static inline uint32_t porin_drop_reason(const porin_flow *f) { return porin__u32(f->rec + PORIN_RECORD_DROP_REASON); }
static inline uint8_t porin_direction(const porin_flow *f) { return f->rec[PORIN_RECORD_DIRECTION]; }
static inline uint8_t porin_protocol(const porin_flow *f) { return f->rec[PORIN_RECORD_PROTOCOL]; }
static inline uint16_t porin_source_port(const porin_flow *f) { return porin__u16(f->rec + PORIN_RECORD_SOURCE_PORT); }
static inline uint16_t porin_destination_port(const porin_flow *f) { return porin__u16(f->rec + PORIN_RECORD_DESTINATION_PORT); }
static inline uint16_t porin_tcp_flags(const porin_flow *f) { return porin__u16(f->rec + PORIN_RECORD_TCP_FLAGS); }
static inline uint32_t porin_source_identity(const porin_flow *f) { return porin__u32(f->rec + PORIN_RECORD_SOURCE_IDENTITY); }
static inline uint32_t porin_destination_identity(const porin_flow *f) { return porin__u32(f->rec + PORIN_RECORD_DESTINATION_IDENTITY); }
static inline uint8_t porin_l7(const porin_flow *f) { return f->rec[PORIN_RECORD_L7]; }
static inline uint32_t porin_dns_rcode(const porin_flow *f) { return porin__u32(f->rec + PORIN_RECORD_DNS_RCODE); }
static inline porin_str porin_source_namespace(const porin_flow *f) { return porin__str(f, PORIN_RECORD_SOURCE + PORIN_ENDPOINT_NAMESPACE); }
static inline porin_str porin_destination_namespace(const porin_flow *f) { return porin__str(f, PORIN_RECORD_DESTINATION + PORIN_ENDPOINT_NAMESPACE); }
static inline porin_str porin_source_pod(const porin_flow *f) { return porin__str(f, PORIN_RECORD_SOURCE + PORIN_ENDPOINT_POD); }
static inline porin_str porin_destination_pod(const porin_flow *f) { return porin__str(f, PORIN_RECORD_DESTINATION + PORIN_ENDPOINT_POD); }
static inline porin_str porin_node(const porin_flow *f) { return porin__str(f, PORIN_RECORD_NODE); }

/* Host functions. */
__attribute__((import_module("porin"), import_name("log")))
void porin_log(int32_t level, const char *ptr, size_t len);

/* The host's batch buffer: static, so C guests need no allocator. */
#ifndef PORIN_BUFFER_SIZE
#define PORIN_BUFFER_SIZE (256 * 1024)
#endif

/* Export `int keep(const porin_flow *)` as the module's filter; the
 * configuration string is ignored. PORIN_FILTER_WITH_INIT also exports
 * `int init(const char *config, uint32_t len)` (0 accepts). */
#define PORIN_FILTER_WITH_INIT(init_fn, keep_fn)                                           \
    static uint8_t porin__buffer[PORIN_BUFFER_SIZE] __attribute__((aligned(8)));           \
    __attribute__((export_name("porin_flow_0_1"))) int32_t porin_flow_0_1(void) {          \
        return PORIN_KIND_FILTER;                                                         \
    }                                                                                     \
    __attribute__((export_name("porin_alloc"))) int32_t porin_alloc(int32_t len) {         \
        return len <= PORIN_BUFFER_SIZE ? (int32_t)(uintptr_t)porin__buffer : 0;         \
    }                                                                                     \
    __attribute__((export_name("porin_init"))) int32_t porin_init(int32_t p, int32_t n) {  \
        return init_fn((const char *)(uintptr_t)p, (uint32_t)n);                          \
    }                                                                                     \
    __attribute__((export_name("porin_filter"))) int32_t porin_filter(int32_t p) {         \
        uint8_t *b = (uint8_t *)(uintptr_t)p;                                             \
        uint32_t count = porin__u32(b + PORIN_HEADER_COUNT);                               \
        uint32_t size = porin__u32(b + PORIN_HEADER_RECORD_SIZE);                          \
        uint32_t first = porin__u32(b + PORIN_HEADER_RECORDS);                             \
        uint8_t *results = b + porin__u32(b + PORIN_HEADER_RESULTS);                       \
        for (uint32_t i = 0; i < count; i++) {                                            \
            porin_flow f = {b, b + first + i * size};                                     \
            results[i] = keep_fn(&f) ? 1 : 0;                                             \
        }                                                                                 \
        return 0;                                                                         \
    }

static inline int32_t porin_accept_any_config(const char *config, uint32_t len) {
    (void)config;
    (void)len;
    return 0;
}

#define PORIN_FILTER(keep_fn) PORIN_FILTER_WITH_INIT(porin_accept_any_config, keep_fn)

#endif
