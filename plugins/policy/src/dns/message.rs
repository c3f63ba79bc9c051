//! DNS messages as the proxy sees them (hickory-proto): the query's name and type, the
//! answers' addresses with the names that lead to them (CNAME chains), and the error
//! replies the proxy makes itself. Every rejection names its reason, which is counted.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use super::pattern::normalize;

/// Largest DNS message the proxy accepts over UDP (EDNS's common 4096-byte limit).
pub const MAX_UDP_MESSAGE: usize = 4096;
/// Size of the DNS header.
const HEADER_LEN: usize = 12;

/// Why a message was not handled normally (a label of `porin_dns_proxy_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rejection {
    /// Shorter than a DNS header: dropped (nothing to answer to).
    Truncated,
    /// Larger than [`MAX_UDP_MESSAGE`]: dropped.
    Oversized,
    /// Unparseable (bad label, compression pointer loop, counts past the end): FORMERR.
    Malformed,
    /// Not a standard query with one question: FORMERR or NOTIMP.
    NotAQuery,
    /// The name is not allowed: REFUSED.
    Refused,
    /// The upstream did not answer in time: SERVFAIL.
    UpstreamTimeout,
    /// The upstream's answer was unreadable: SERVFAIL.
    BadUpstreamAnswer,
    /// No original destination for the client (not redirected by the datapath): dropped.
    NotRedirected,
    /// An upstream answer nobody waits for (late, duplicated, from another address, or
    /// with an unknown id): dropped.
    StrayAnswer,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::Oversized => "oversized",
            Self::Malformed => "malformed",
            Self::NotAQuery => "not_a_query",
            Self::Refused => "refused",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::BadUpstreamAnswer => "bad_upstream_answer",
            Self::NotRedirected => "not_redirected",
            Self::StrayAnswer => "stray_answer",
        }
    }

    pub const ALL: [Self; 9] = [
        Self::Truncated,
        Self::Oversized,
        Self::Malformed,
        Self::NotAQuery,
        Self::Refused,
        Self::UpstreamTimeout,
        Self::BadUpstreamAnswer,
        Self::NotRedirected,
        Self::StrayAnswer,
    ];
}

/// A query the proxy can decide on.
#[derive(Debug, Clone)]
pub struct Query {
    pub message: Message,
    /// The question's name, normalized (lower case, no trailing dot).
    pub name: String,
    pub qtype: RecordType,
}

/// What to do with bytes received from a client.
#[derive(Debug)]
pub enum Parsed {
    Query(Box<Query>),
    /// Answer the client with these bytes and count the reason.
    Reply(Vec<u8>, Rejection),
    /// Drop silently and count the reason.
    Drop(Rejection),
}

/// Reads a client's message.
pub fn parse_query(bytes: &[u8]) -> Parsed {
    if bytes.len() < HEADER_LEN {
        return Parsed::Drop(Rejection::Truncated);
    }
    if bytes.len() > MAX_UDP_MESSAGE {
        return Parsed::Drop(Rejection::Oversized);
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let message = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) => return reply(error_reply(id, ResponseCode::FormErr), Rejection::Malformed),
    };
    if message.message_type() != MessageType::Query || message.queries().len() != 1 {
        return reply(error_reply(id, ResponseCode::FormErr), Rejection::NotAQuery);
    }
    if message.op_code() != OpCode::Query {
        return reply(error_reply(id, ResponseCode::NotImp), Rejection::NotAQuery);
    }
    let q = &message.queries()[0];
    let name = normalize(&q.name().to_ascii());
    let qtype = q.query_type();
    Parsed::Query(Box::new(Query {
        message,
        name,
        qtype,
    }))
}

fn reply(bytes: Option<Vec<u8>>, why: Rejection) -> Parsed {
    match bytes {
        Some(b) => Parsed::Reply(b, why),
        None => Parsed::Drop(why),
    }
}

/// A bare error reply (no question echoed: the query could not be read).
fn error_reply(id: u16, code: ResponseCode) -> Option<Vec<u8>> {
    Message::error_msg(id, OpCode::Query, code).to_vec().ok()
}

/// The reply to a query the proxy answers itself (REFUSED, SERVFAIL): the question is
/// echoed, as resolvers expect.
pub fn answer_with(query: &Query, code: ResponseCode) -> Option<Vec<u8>> {
    let mut m = Message::error_msg(query.message.id(), query.message.op_code(), code);
    m.add_queries(query.message.queries().to_vec());
    m.set_recursion_desired(query.message.recursion_desired());
    m.set_recursion_available(true);
    m.to_vec().ok()
}

/// The addresses of an answer and the names leading to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub rcode: u16,
    /// Every name of the chain: the question and each CNAME target (normalized).
    pub names: BTreeSet<String>,
    /// Addresses with their TTL.
    pub addresses: Vec<(IpAddr, Duration)>,
    /// The id of the upstream's reply (must equal the query's).
    pub id: u16,
    /// The chain's CNAME targets, in answer order (normalized).
    pub cnames: Vec<String>,
    /// The type of each record of the chain, in answer order.
    pub rrtypes: Vec<RecordType>,
    /// The lowest TTL of the chain's records (0 without any).
    pub ttl: u32,
}

/// Reads an upstream's answer to `question` (normalized).
pub fn parse_answer(bytes: &[u8], question: &str) -> Result<Answer, Rejection> {
    answer_of(&read_answer(bytes)?, question)
}

/// Decodes an upstream's answer.
pub fn read_answer(bytes: &[u8]) -> Result<Message, Rejection> {
    Message::from_vec(bytes).map_err(|_| Rejection::BadUpstreamAnswer)
}

/// The addresses of a decoded answer to `question` (normalized).
pub fn answer_of(m: &Message, question: &str) -> Result<Answer, Rejection> {
    let mut out = Answer {
        rcode: u16::from(m.response_code()),
        id: m.id(),
        ..Answer::default()
    };
    // An answer echoing another question is not the answer to this one.
    if let Some(q) = m.queries().first()
        && normalize(&q.name().to_ascii()) != question
    {
        return Err(Rejection::BadUpstreamAnswer);
    }
    // Follow the CNAME chain from the question; records of other names are ignored
    // (a resolver must not trust them for this question).
    // Each owner and CNAME target is normalized once.
    let records: Vec<(String, Option<String>)> = m
        .answers()
        .iter()
        .map(|r| {
            let target = match r.data() {
                RData::CNAME(t) => Some(normalize(&t.0.to_ascii())),
                _ => None,
            };
            (normalize(&r.name().to_ascii()), target)
        })
        .collect();
    let mut chain = BTreeSet::from([question.to_owned()]);
    loop {
        let before = chain.len();
        for (owner, target) in &records {
            if let Some(target) = target
                && chain.contains(owner)
            {
                chain.insert(target.clone());
            }
        }
        if chain.len() == before {
            break;
        }
    }
    let mut ttl: Option<u32> = None;
    for (r, (owner, target)) in m.answers().iter().zip(&records) {
        if !chain.contains(owner) {
            continue;
        }
        out.rrtypes.push(r.record_type());
        ttl = Some(ttl.map_or(r.ttl(), |t| t.min(r.ttl())));
        let ttl = Duration::from_secs(u64::from(r.ttl()));
        match r.data() {
            RData::A(a) => out.addresses.push((IpAddr::V4(a.0), ttl)),
            RData::AAAA(a) => out.addresses.push((IpAddr::V6(a.0), ttl)),
            _ => {}
        }
        out.cnames.extend(target.iter().cloned());
    }
    out.ttl = ttl.unwrap_or(0);
    out.names = chain;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query as HQuery;
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, Record};
    use std::str::FromStr;

    fn name(s: &str) -> Name {
        Name::from_str(s).expect("name")
    }

    fn query_bytes(n: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(77);
        m.set_recursion_desired(true);
        m.add_query(HQuery::query(name(n), RecordType::A));
        m.to_vec().expect("encode")
    }

    #[test]
    fn reads_a_query() {
        let Parsed::Query(q) = parse_query(&query_bytes("Bucket.S3.us-east-1.amazonaws.com."))
        else {
            panic!("not a query")
        };
        assert_eq!(q.name, "bucket.s3.us-east-1.amazonaws.com");
        assert_eq!(q.qtype, RecordType::A);
        let refused = answer_with(&q, ResponseCode::Refused).expect("refused");
        let m = Message::from_vec(&refused).expect("reply parses");
        assert_eq!((m.id(), m.response_code()), (77, ResponseCode::Refused));
        assert_eq!(m.queries().len(), 1);
        assert_eq!(m.message_type(), MessageType::Response);
    }

    #[test]
    fn short_and_huge_messages_are_dropped() {
        assert!(matches!(
            parse_query(&[0; 5]),
            Parsed::Drop(Rejection::Truncated)
        ));
        assert!(matches!(
            parse_query(&vec![0; MAX_UDP_MESSAGE + 1]),
            Parsed::Drop(Rejection::Oversized)
        ));
    }

    #[test]
    fn truncated_question_is_formerr() {
        let mut q = query_bytes("example.com");
        q.truncate(q.len() - 3);
        match parse_query(&q) {
            Parsed::Reply(bytes, Rejection::Malformed) => {
                let m = Message::from_vec(&bytes).expect("reply parses");
                assert_eq!((m.id(), m.response_code()), (77, ResponseCode::FormErr));
            }
            other => panic!("expected FORMERR, got {other:?}"),
        }
    }

    #[test]
    fn compression_pointer_loop_is_malformed() {
        // Header: id 1, RD, one question; the question's name is a pointer to itself
        // (offset 12), then type A, class IN.
        let mut q = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(matches!(
            parse_query(&q),
            Parsed::Reply(_, Rejection::Malformed)
        ));
        // Two pointers pointing at each other.
        let mut q = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
        assert!(matches!(
            parse_query(&q),
            Parsed::Reply(_, Rejection::Malformed)
        ));
    }

    #[test]
    fn responses_are_not_queries() {
        let mut q = query_bytes("example.com");
        q[2] |= 0x80;
        assert!(matches!(
            parse_query(&q),
            Parsed::Reply(_, Rejection::NotAQuery)
        ));
    }

    #[test]
    fn answer_follows_the_cname_chain_only() {
        let mut m = Message::new();
        m.set_id(5);
        m.set_message_type(MessageType::Response);
        m.add_query(HQuery::query(name("api.example.com."), RecordType::A));
        m.add_answer(Record::from_rdata(
            name("api.example.com."),
            30,
            RData::CNAME(CNAME(name("edge.cdn.net."))),
        ));
        m.add_answer(Record::from_rdata(
            name("edge.cdn.net."),
            20,
            RData::A(A::new(192, 0, 2, 10)),
        ));
        m.add_answer(Record::from_rdata(
            name("unrelated.org."),
            20,
            RData::A(A::new(192, 0, 2, 66)),
        ));
        let a = parse_answer(&m.to_vec().expect("encode"), "api.example.com").expect("answer");
        assert_eq!(
            a.names,
            BTreeSet::from(["api.example.com".to_owned(), "edge.cdn.net".to_owned()])
        );
        assert_eq!(
            a.addresses,
            vec![(IpAddr::from([192, 0, 2, 10]), Duration::from_secs(20))]
        );
        assert!(parse_answer(&[1, 2, 3], "x").is_err());
    }
}
