//! Prometheus's HTTP API, as `nettune top --prometheus` asks it: instant queries
//! (`GET /api/v1/query?query=…&stats=all`) over the agent's bounded HTTP client,
//! and their answers turned into plain samples. Parsing is apart from the
//! exchange ([`parse`]) so recorded answers test it.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde::Deserialize;

use crate::serve::client::{self, HttpError, TransferError};

/// The largest answer read: the nodes of a large cluster, many times over.
const MAX_BODY: usize = 64 << 20;

/// A Prometheus server: its address and the path it is served under.
#[derive(Clone, Debug)]
pub struct Prometheus {
    addr: SocketAddr,
    prefix: String,
    url: String,
}

/// Why a query brought no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Prometheus could not be reached, or did not answer in time.
    #[error("{url}: {source}")]
    Transfer {
        /// The server asked.
        url: String,
        /// What went wrong.
        #[source]
        source: TransferError,
    },
    /// Prometheus refused the query (`errorType`, `error`).
    #[error("Prometheus refused the query ({kind}): {message}")]
    Refused {
        /// `bad_data`, `timeout`, `execution`, …
        kind: String,
        /// Its message.
        message: String,
    },
    /// The answer is not the API's JSON (HTTP status, what was wrong).
    #[error("not an answer of Prometheus's API (HTTP {status}): {detail}")]
    Malformed {
        /// The HTTP status.
        status: u16,
        /// What did not parse.
        detail: String,
    },
}

/// One series of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value (`NaN` and infinities as Prometheus gives them).
    pub value: f64,
}

/// An instant query's answer and what it cost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    /// The result vector.
    pub samples: Vec<Sample>,
    /// Samples Prometheus read to answer (`stats.samples.totalQueryableSamples`),
    /// when it says.
    pub samples_read: Option<u64>,
}

impl Prometheus {
    /// The server at `url` (`http://host:port`, optionally with the path it is
    /// served under, e.g. `http://prometheus:9090/prometheus`).
    pub fn new(url: &str) -> Result<Self, HttpError> {
        let addr = client::parse_base(url)?;
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let prefix = rest
            .split_once('/')
            .map_or("", |(_, path)| path)
            .trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        };
        Ok(Self {
            addr,
            url: url.trim_end_matches('/').to_owned(),
            prefix,
        })
    }

    /// The URL it was given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Evaluates `promql` now, within `timeout` (Prometheus is told the same
    /// bound, so it stops evaluating too).
    pub fn query(&self, promql: &str, timeout: Duration) -> Result<Answer, QueryError> {
        let path = format!(
            "{}/api/v1/query?query={}&stats=all&timeout={}ms",
            self.prefix,
            encode(promql),
            timeout.as_millis()
        );
        // A little more for the transfer than for the evaluation.
        let (status, body) =
            client::get_raw_blocking(self.addr, &path, timeout + Duration::from_secs(1), MAX_BODY)
                .map_err(|source| QueryError::Transfer {
                    url: self.url.clone(),
                    source,
                })?;
        parse(status, &body)
    }
}

/// Percent-encodes a query parameter's value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<RawSample>,
    #[serde(default)]
    stats: Option<Stats>,
}

#[derive(Deserialize)]
struct RawSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
struct Stats {
    samples: Option<SampleStats>,
}

#[derive(Deserialize)]
struct SampleStats {
    #[serde(rename = "totalQueryableSamples")]
    total_queryable_samples: Option<u64>,
}

/// An instant query's answer from its HTTP status and body: the vector, or
/// why there is none (Prometheus answers errors as JSON with a 4xx/5xx status).
pub fn parse(status: u16, body: &[u8]) -> Result<Answer, QueryError> {
    let malformed = |detail: String| QueryError::Malformed { status, detail };
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(200).collect();
        malformed(format!("{e}: {text}"))
    })?;
    if envelope.status != "success" {
        return Err(QueryError::Refused {
            kind: envelope.error_type.unwrap_or_else(|| "unknown".into()),
            message: envelope
                .error
                .unwrap_or_else(|| format!("status {}", envelope.status)),
        });
    }
    let data = envelope.data.ok_or_else(|| malformed("no data".into()))?;
    if data.result_type != "vector" {
        return Err(malformed(format!(
            "a {} where an instant vector was expected",
            data.result_type
        )));
    }
    let samples = data
        .result
        .into_iter()
        .map(|s| {
            let value = s
                .value
                .1
                .parse()
                .map_err(|_| malformed(format!("value `{}`", s.value.1)))?;
            Ok(Sample {
                labels: s.metric,
                value,
            })
        })
        .collect::<Result<_, QueryError>>()?;
    Ok(Answer {
        samples,
        samples_read: data
            .stats
            .and_then(|s| s.samples)
            .and_then(|s| s.total_queryable_samples),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Answers recorded from Prometheus 2.42 (Debian) scraping two agents.
    const TWO_NODES: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"nettune_column":"drops","node":"node-1"},"value":[1796654054.030,"0.8214555663535256"]},{"metric":{"nettune_column":"drops","node":"node-2"},"value":[1796654054.030,"0.8537350910232266"]},{"metric":{"nettune_column":"pods","node":"node-1"},"value":[1796654054.030,"3"]},{"metric":{"nettune_column":"pods","node":"node-2"},"value":[1796654054.030,"2"]}],"stats":{"timings":{"evalTotalTime":0.000308354,"resultSortTime":0,"queryPreparationTime":0.000086731,"innerEvalTime":0.000217376,"execQueueTime":0.000004647,"execTotalTime":0.000316565},"samples":{"totalQueryableSamples":492,"peakSamples":71}}}}"#;
    const REFUSED: &str = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:44: parse error: unclosed left parenthesis"}"#;

    #[test]
    fn a_vector_answer_gives_its_samples_and_what_it_read() {
        let answer = parse(200, TWO_NODES.as_bytes()).unwrap();
        assert_eq!(answer.samples.len(), 4);
        assert_eq!(answer.samples[0].labels["node"], "node-1");
        assert_eq!(answer.samples[0].labels["nettune_column"], "drops");
        assert!((answer.samples[0].value - 0.821_455_566).abs() < 1e-6);
        assert_eq!(answer.samples[2].value, 3.0);
        assert_eq!(answer.samples_read, Some(492));
    }

    #[test]
    fn prometheus_s_special_values_parse() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]},{"metric":{},"value":[1,"+Inf"]},{"metric":{},"value":[1,"-Inf"]}]}}"#;
        let answer = parse(200, body.as_bytes()).unwrap();
        assert!(answer.samples[0].value.is_nan());
        assert_eq!(answer.samples[1].value, f64::INFINITY);
        assert_eq!(answer.samples[2].value, f64::NEG_INFINITY);
        assert_eq!(answer.samples_read, None);
    }

    #[test]
    fn a_refused_query_and_a_page_that_is_not_the_api_say_what_they_are() {
        let err = parse(400, REFUSED.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Prometheus refused the query (bad_data): invalid parameter \"query\": 1:44: parse \
             error: unclosed left parenthesis"
        );
        let err = parse(502, b"<html>Bad Gateway</html>").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("not an answer of Prometheus's API (HTTP 502): ")
                && err.to_string().ends_with("<html>Bad Gateway</html>"),
            "{err}"
        );
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse(200, matrix.as_bytes()).is_err());
    }

    #[test]
    fn urls_keep_their_path_and_queries_are_encoded() {
        let p = Prometheus::new("http://127.0.0.1:9090/prometheus/").unwrap();
        assert_eq!(p.prefix, "/prometheus");
        assert_eq!(p.url(), "http://127.0.0.1:9090/prometheus");
        assert_eq!(Prometheus::new("http://127.0.0.1:9090").unwrap().prefix, "");
        assert!(Prometheus::new("https://127.0.0.1:9090").is_err());
        assert_eq!(
            encode(r#"sum by (node) (x{a="b"})"#),
            "sum%20by%20%28node%29%20%28x%7Ba%3D%22b%22%7D%29"
        );
    }

    #[test]
    fn an_unreachable_server_is_an_error_naming_it() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = Prometheus::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = p.query("up", Duration::from_secs(1)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("http://127.0.0.1:{port}: cannot connect")),
            "{err}"
        );
    }
}
