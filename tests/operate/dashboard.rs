//! The Grafana dashboard (`ops/grafana/chatstream.json`) against real scrapes: after a
//! `queue_worker --rest-only` (the gateway) and a `queue_worker --worker-only` answered a
//! request over RabbitMQ, every metric the dashboard's queries name is in a scrape, with
//! the labels the queries select and group by. Renaming a metric or a label without
//! updating the dashboard fails here.

use std::collections::{BTreeMap, BTreeSet};

use chatstream_core::testkit::fake_openai::Behaviour;
use serde_json::Value;

use crate::support::http;
use crate::{Setup, WAIT};

const DASHBOARD: &str = include_str!("../../ops/grafana/chatstream.json");

/// Labels Prometheus adds when it scrapes, not the process.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Every string in `json`.
fn strings<'a>(json: &'a Value, out: &mut Vec<&'a str>) {
    match json {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(fields) => fields.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// The length of the identifier (`[A-Za-z0-9_]`) at the start of `s`.
fn ident_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

/// The `chatstream_*` metrics `expr` names, each with the labels it selects on
/// (`name{label=~"…"}`) or groups the metric by (`by (a,b) (… name …)`).
fn metrics_in(expr: &str, out: &mut BTreeMap<String, BTreeSet<String>>) {
    let mut pending_by: Vec<String> = Vec::new();
    let mut rest = expr;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("by (") {
            let end = after.find(')').unwrap_or(after.len());
            pending_by = after[..end]
                .split(',')
                .map(|l| l.trim().to_owned())
                .collect();
            rest = &after[end..];
        } else if rest.starts_with("chatstream_") {
            let len = ident_len(rest);
            let labels = out.entry(rest[..len].to_owned()).or_default();
            labels.extend(pending_by.drain(..));
            rest = &rest[len..];
            if let Some(selector) = rest.strip_prefix('{') {
                let end = selector.find('}').unwrap_or(selector.len());
                for matcher in selector[..end].split(',') {
                    let name = &matcher.trim()[..ident_len(matcher.trim())];
                    if !name.is_empty() {
                        labels.insert(name.to_owned());
                    }
                }
                rest = &selector[end..];
            }
        } else {
            let mut chars = rest.chars();
            chars.next();
            rest = chars.as_str();
        }
    }
}

/// The dashboard's metrics and their labels, from every query and every text in it.
fn dashboard_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let json: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut texts = Vec::new();
    strings(&json, &mut texts);
    let mut out = BTreeMap::new();
    for text in texts {
        metrics_in(text, &mut out);
    }
    for labels in out.values_mut() {
        labels.retain(|l| !TARGET_LABELS.contains(&l.as_str()));
    }
    out
}

/// The label names of the samples of `metric` in a scrape (`None` when it has none).
fn sample_labels(scrape: &str, metric: &str) -> Option<BTreeSet<String>> {
    let mut found = None;
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        if !rest.starts_with(['{', ' ']) {
            continue; // a longer name with this one as its prefix
        }
        let labels: &mut BTreeSet<String> = found.get_or_insert_with(BTreeSet::new);
        if let Some(selector) = rest.strip_prefix('{') {
            // `name="value",name="value"}`: the values here (models, outcomes, routes,
            // bounds) hold no `",`.
            for pair in selector.split("\",") {
                if let Some((name, _)) = pair.split_once('=') {
                    labels.insert(name.trim().to_owned());
                }
            }
        }
    }
    found
}

#[test]
fn the_dashboard_json_takes_its_datasource_from_a_variable() {
    let json: Value = serde_json::from_str(DASHBOARD).expect("JSON");
    assert!(json["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert!(
        json["id"].is_null(),
        "no instance id, so import creates one"
    );
    let variables = json["templating"]["list"].as_array().expect("variables");
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus datasource variable"
    );
    let mut texts = Vec::new();
    strings(&json, &mut texts);
    let mut ids = BTreeSet::new();
    for panel in json["panels"].as_array().expect("panels") {
        assert!(ids.insert(panel["id"].as_u64()), "panel ids are unique");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{target}");
            assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }
    let metrics = dashboard_metrics();
    assert!(metrics.len() >= 20, "{metrics:?}");
    let mut found = BTreeMap::new();
    metrics_in(
        r#"histogram_quantile(0.5, sum by (le,model) (rate(chatstream_x_bucket{job=~"$job",model=~"$m"}[5m]))) / chatstream_y"#,
        &mut found,
    );
    let labels = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(
        found["chatstream_x_bucket"],
        labels(&["le", "model", "job"])
    );
    assert_eq!(found["chatstream_y"], labels(&[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_in_a_gateway_or_worker_scrape() {
    let Some(setup) = Setup::new(Behaviour::answer(["Dash", "board."])).await else {
        return;
    };
    let url = crate::support::amqp_url();
    let worker = setup
        .start(
            &url,
            &["--worker-only"],
            &[("METRICS_PORT", "0"), ("METRICS_HOST", "127.0.0.1")],
        )
        .await;
    let worker_port = worker.ready.metrics.expect("the worker's metrics port");
    let rest = setup.start(&url, &["--rest-only"], &[]).await;
    let rest_port = rest.ready.rest.expect("the REST port");

    let post = "POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json";
    let body = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "Scrape me."}], "stream": true}"#;
    let (status, submitted) = http(rest_port, post, body, WAIT).await;
    assert!(status.contains(" 200 "), "{status}: {submitted}");
    let json: Value = serde_json::from_str(&submitted).expect("json");
    let uid = json["uid"].as_str().expect("uid");
    let get = format!("GET /v1/chat/response?uid={uid} HTTP/1.0");
    let (_, sse) = http(rest_port, &get, "", WAIT).await;
    assert!(sse.contains("[DONE]"), "{sse:?}");

    let scrape = |port: u16| async move {
        let (status, text) = http(port, "GET /metrics HTTP/1.0", "", WAIT).await;
        assert!(status.contains(" 200 "), "{status}");
        text
    };
    let worker_text = scrape(worker_port).await;
    let gateway_text = scrape(rest_port).await;

    let mut missing = Vec::new();
    for (metric, labels) in dashboard_metrics() {
        let (side, text) = if metric.starts_with("chatstream_worker_") {
            ("worker", &worker_text)
        } else {
            ("gateway", &gateway_text)
        };
        match sample_labels(text, &metric) {
            None => missing.push(format!("{metric} (no sample in the {side}'s scrape)")),
            Some(have) => {
                for label in labels.difference(&have) {
                    missing.push(format!(
                        "{metric}: no label {label:?} in the {side}'s scrape"
                    ));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries what the processes do not expose:\n{}\n\nworker:\n{worker_text}\ngateway:\n{gateway_text}",
        missing.join("\n")
    );
}
