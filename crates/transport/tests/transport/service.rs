//! Services: the same named endpoint on every node, for protocol drivers.

use shoal_transport::{Incoming, RemoteError, ServiceError};

use super::support::{cluster, eventually, shutdown, within};

/// A message reaches the service on the named node, tagged with the sender's node name;
/// messages between one pair arrive in send order; a node can send to itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_counterpart_in_order_with_their_sender() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, mut a_inbox) = nodes[0].open_service::<u32>("numbers", 64).await.expect("opens on a");
    let (_b, mut b_inbox) = nodes[1].open_service::<u32>("numbers", 64).await.expect("opens on b");
    let sender = tokio::spawn(async move {
        for n in 0..1_000 {
            a.send("b", &n).await.expect("b is connected");
        }
        a
    });
    for expected in 0..1_000 {
        let incoming = within(b_inbox.recv()).await.expect("the service is open");
        assert_eq!(incoming, Incoming { from: "a".to_owned(), message: expected });
    }
    let a = sender.await.expect("the sender finishes");

    a.send("a", &7).await.expect("a node reaches its own service");
    let incoming = within(a_inbox.recv()).await.expect("open");
    assert_eq!(incoming, Incoming { from: "a".to_owned(), message: 7 });
    shutdown(&nodes);
}

/// A service opens once per node; dropping the inbox closes it, and it can open again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_opens_once_and_closes_with_its_inbox() {
    let nodes = cluster(&["a"]).await;
    let (_service, inbox) = nodes[0].open_service::<u32>("once", 8).await.expect("opens");
    let again = nodes[0].open_service::<u32>("once", 8).await;
    assert!(matches!(again, Err(ServiceError::Start { ref name, .. }) if name == "once"));
    drop(inbox);
    let node = nodes[0].clone();
    eventually("the closed service's name is free", move || {
        let node = node.clone();
        async move { node.runtime().whereis("shoal.service.once").is_none() }
    })
    .await;
    let reopened = nodes[0].open_service::<u32>("once", 8).await;
    assert!(reopened.is_ok());
    assert!(matches!(
        nodes[0].open_service::<u32>("zero", 0).await,
        Err(ServiceError::ZeroCapacity)
    ));
    shutdown(&nodes);
}

/// Sending to a node that is not connected is an error that names it; sending to a node
/// where the service is not open is dropped there, as a cast to an unknown name is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_nodes_are_errors_and_closed_services_drop() {
    let nodes = cluster(&["a", "b"]).await;
    let (a, _inbox) = nodes[0].open_service::<String>("words", 8).await.expect("opens");
    let error = a.send("nowhere", &"hello".to_owned()).await.expect_err("not a member");
    assert!(matches!(error, RemoteError::NoConnection(ref node) if node == "nowhere"));
    a.send("b", &"nobody listens".to_owned()).await.expect("b is connected; it drops the cast");
    shutdown(&nodes);
}
