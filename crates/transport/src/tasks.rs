//! The node's background tasks (accepting, connecting, reading, writing, serving requests):
//! each ends when the node stops.

use tokio::sync::watch;

pub(crate) struct Tasks {
    stop: watch::Sender<bool>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self { stop: watch::Sender::new(false) }
    }
}

impl Tasks {
    /// Spawns a task that ends when the node stops.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => {}
                () = task => {}
            }
        });
    }

    /// Ends every task.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }

    pub(crate) fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }
}
