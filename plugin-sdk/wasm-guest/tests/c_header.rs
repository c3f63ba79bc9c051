//! The C header repeats the ABI's numbers; it must not drift from
//! `porin-wasm-abi`.

use porin_wasm_abi::{endpoint, header, record};

#[test]
fn c_header_offsets_match_the_abi() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/c/porin_flow.h");
    let text = std::fs::read_to_string(path).expect("read porin_flow.h");
    let define = |name: &str| -> usize {
        text.lines()
            .find_map(|l| {
                let rest = l.strip_prefix("#define ")?.strip_prefix(name)?;
                rest.trim().parse().ok()
            })
            .unwrap_or_else(|| panic!("no numeric #define {name} in porin_flow.h"))
    };
    let expected = [
        ("PORIN_KIND_FILTER", porin_wasm_abi::KIND_FILTER as usize),
        (
            "PORIN_KIND_LABELLER",
            porin_wasm_abi::KIND_LABELLER as usize,
        ),
        ("PORIN_HEADER_COUNT", header::COUNT),
        ("PORIN_HEADER_RECORD_SIZE", header::RECORD_SIZE),
        ("PORIN_HEADER_RECORDS", header::RECORDS),
        ("PORIN_HEADER_RESULTS", header::RESULTS),
        ("PORIN_HEADER_LENGTH", header::LENGTH),
        ("PORIN_HEADER_SIZE", header::SIZE),
        ("PORIN_RECORD_TIME_NS", record::TIME_NS),
        ("PORIN_RECORD_DROP_REASON", record::DROP_REASON),
        ("PORIN_RECORD_VERDICT", record::VERDICT),
        ("PORIN_RECORD_DIRECTION", record::DIRECTION),
        ("PORIN_RECORD_IP_VERSION", record::IP_VERSION),
        ("PORIN_RECORD_PROTOCOL", record::PROTOCOL),
        ("PORIN_RECORD_SOURCE_PORT", record::SOURCE_PORT),
        ("PORIN_RECORD_DESTINATION_PORT", record::DESTINATION_PORT),
        ("PORIN_RECORD_TCP_FLAGS", record::TCP_FLAGS),
        ("PORIN_RECORD_IS_REPLY", record::IS_REPLY),
        ("PORIN_RECORD_L7", record::L7),
        ("PORIN_RECORD_SOURCE_IP", record::SOURCE_IP),
        ("PORIN_RECORD_DESTINATION_IP", record::DESTINATION_IP),
        ("PORIN_RECORD_SOURCE_IDENTITY", record::SOURCE_IDENTITY),
        (
            "PORIN_RECORD_DESTINATION_IDENTITY",
            record::DESTINATION_IDENTITY,
        ),
        ("PORIN_RECORD_DNS_RCODE", record::DNS_RCODE),
        ("PORIN_RECORD_HTTP_CODE", record::HTTP_CODE),
        ("PORIN_RECORD_SOURCE", record::SOURCE),
        ("PORIN_RECORD_DESTINATION", record::DESTINATION),
        ("PORIN_RECORD_NODE", record::NODE),
        ("PORIN_RECORD_DNS_QUERY", record::DNS_QUERY),
        ("PORIN_RECORD_HTTP_METHOD", record::HTTP_METHOD),
        ("PORIN_RECORD_HTTP_URL", record::HTTP_URL),
        ("PORIN_RECORD_SIZE", record::SIZE),
        ("PORIN_ENDPOINT_NAMESPACE", endpoint::NAMESPACE),
        ("PORIN_ENDPOINT_POD", endpoint::POD),
        ("PORIN_ENDPOINT_WORKLOAD", endpoint::WORKLOAD),
        ("PORIN_ENDPOINT_WORKLOAD_KIND", endpoint::WORKLOAD_KIND),
        ("PORIN_ENDPOINT_LABELS", endpoint::LABELS),
        ("PORIN_ENDPOINT_NAMES", endpoint::NAMES),
    ];
    for (name, value) in expected {
        assert_eq!(define(name), value, "{name}");
    }
}
