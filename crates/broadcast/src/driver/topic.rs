//! [`Topic`]: a broadcast topic's name together with the type of its messages.

use std::fmt;
use std::marker::PhantomData;

/// A broadcast topic: a name, the same on every node of the overlay, and the type `M` of the
/// messages broadcast on it. Declare it once, as a constant shared by the code of every node,
/// and use it both to register the topic's handler ([`Broadcast::register`], which takes only
/// a handler of `M`s) and to broadcast ([`Broadcast::broadcast`], which takes only an `M`):
/// the compiler checks both, so a message of another type cannot be handed to the topic.
///
/// [`Broadcast::register`]: super::Broadcast::register
/// [`Broadcast::broadcast`]: super::Broadcast::broadcast
///
/// ```
/// use shoal_broadcast::Topic;
///
/// /// Chat lines, to every node.
/// const CHAT: Topic<String> = Topic::new("chat");
/// assert_eq!(CHAT.name(), "chat");
/// ```
///
/// A broadcast of another type does not compile:
///
/// ```compile_fail,E0308
/// # use shoal_broadcast::{Broadcast, Topic};
/// const CHAT: Topic<String> = Topic::new("chat");
///
/// async fn announce(broadcast: &Broadcast) {
///     broadcast.broadcast(CHAT, 42_u64).await; // expected `String`, found `u64`
/// }
/// ```
///
/// Nor does registering a handler of another type for it:
///
/// ```compile_fail,E0271
/// # use shoal_broadcast::{Broadcast, Log, Topic};
/// const CHAT: Topic<String> = Topic::new("chat");
///
/// async fn keep_numbers(broadcast: &Broadcast) {
///     let numbers = Log::<u64>::with_origin("a", 1, 100);
///     broadcast.register(CHAT, numbers).await; // a handler of `u64`s, not `String`s
/// }
/// ```
///
/// What travels is the name: the nodes of one overlay agree on a topic's message type by
/// sharing its declaration. Ids and payloads that arrive from another node and do not decode
/// as the handler's types are logged and dropped, never delivered.
pub struct Topic<M> {
    name: &'static str,
    /// `fn(M) -> M`: a topic neither holds nor sends an `M`, so it is `Send`, `Sync` and
    /// `Copy` whatever `M` is, and it is invariant in `M`.
    message: PhantomData<fn(M) -> M>,
}

impl<M> Topic<M> {
    /// The topic called `name`, for messages of type `M`.
    pub const fn new(name: &'static str) -> Self {
        Topic { name, message: PhantomData }
    }

    /// The topic's name, as it travels between nodes.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

// By hand rather than derived: a derive would ask the same of `M`, which a topic never holds.
impl<M> Clone for Topic<M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M> Copy for Topic<M> {}

impl<M> fmt::Debug for Topic<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Topic").field(&self.name).finish()
    }
}
