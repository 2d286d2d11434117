//! Joining, full mesh, calls across nodes.

use std::time::Duration;

use super::support::{Echo, cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_into_a_full_mesh() {
    let nodes = cluster(&["a", "b", "c"]).await;
    assert_eq!(nodes[0].nodes(), vec!["b".to_owned(), "c".to_owned()]);
    assert_eq!(nodes[1].nodes(), vec!["a".to_owned(), "c".to_owned()]);
    assert_eq!(nodes[2].nodes(), vec!["a".to_owned(), "b".to_owned()]);
    for node in &nodes {
        node.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_call_is_answered() {
    let nodes = cluster(&["a", "b"]).await;
    let echo = nodes[0].runtime().spawn(Echo).pid();
    let reply: String =
        nodes[1].runtime().call(echo, "hello".to_owned(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(reply, "HELLO");
    for node in &nodes {
        node.shutdown();
    }
}
