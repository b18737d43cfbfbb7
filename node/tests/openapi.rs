//! The OpenAPI description covers every route the server answers, and every documented
//! route is served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lamina_node::cli::{init_node_dir, InitOptions};
use lamina_node::config::NodeConfig;
use lamina_node::node::RunningNode;

const REQUIRED: [(&str, &str); 26] = [
    ("get", "/v1/status"),
    ("get", "/v1/blocks/latest"),
    ("get", "/v1/blocks/{height}"),
    ("post", "/v1/transactions"),
    ("post", "/v1/transactions/batch"),
    ("get", "/v1/transactions/{hash}"),
    ("get", "/v1/accounts/{address}"),
    ("get", "/v1/accounts/{address}/proof"),
    ("get", "/v1/da/shares/{height}/{index}"),
    ("get", "/v1/da/shares/{height}/{row}/{col}"),
    ("get", "/v1/da/blobs/{height}/{namespace}"),
    ("get", "/v1/da/roots/{height}"),
    ("get", "/v1/da/held/{height}"),
    ("post", "/v1/da/bad-encoding"),
    ("get", "/v1/da/bad-encoding"),
    ("post", "/v1/da/blobs"),
    ("get", "/v1/settlement/heights/{height}"),
    ("get", "/v1/settlement/batches"),
    ("get", "/v1/settlement/batches/{id}"),
    ("get", "/v1/settlement/accounts/{address}"),
    ("post", "/v1/settlement/messages"),
    ("get", "/v1/bridge/withdrawals/{id}/proof"),
    ("get", "/v1/consensus/evidence"),
    ("get", "/v1/network/peers"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
];

fn documented() -> Vec<(String, String)> {
    let doc = lamina_node::http::openapi();
    let mut routes = Vec::new();
    for (path, item) in &doc.paths.paths {
        let methods = [
            ("get", item.get.is_some()),
            ("post", item.post.is_some()),
            ("put", item.put.is_some()),
            ("delete", item.delete.is_some()),
            ("patch", item.patch.is_some()),
        ];
        for (method, present) in methods {
            if present {
                routes.push((method.to_string(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn every_required_route_is_documented() {
    let routes = documented();
    for (method, path) in REQUIRED {
        assert!(
            routes.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} missing from the OpenAPI document: {routes:?}"
        );
    }
    assert_eq!(
        routes.len(),
        REQUIRED.len(),
        "update REQUIRED when adding routes: {routes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let options = InitOptions {
        chain_id: "openapi-test".into(),
        accounts: 1,
        http: "127.0.0.1:0".parse().unwrap(),
        block_time_ms: 50,
    };
    init_node_dir(dir.path(), &options).unwrap();
    let config = NodeConfig::load(&dir.path().join("config.toml")).unwrap();
    let node = RunningNode::start(config).await.unwrap();
    let client = reqwest::Client::new();
    for (method, path) in documented() {
        let concrete = path
            .replace("{height}", "1")
            .replace("{index}", "0")
            .replace("{hash}", &"00".repeat(32))
            .replace("{address}", &"11".repeat(32));
        let url = format!("http://{}{concrete}", node.http_addr);
        let response = match method.as_str() {
            "get" => client.get(&url).send().await.unwrap(),
            "post" => client
                .post(&url)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap(),
            other => panic!("unexpected method {other}"),
        };
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(
            status != 405 && !body.contains("route_not_found"),
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
    node.stop().await.unwrap();
}
