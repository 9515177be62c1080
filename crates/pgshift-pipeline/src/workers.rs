//! N tasks taking items from one shared queue. The first error empties the queue, so
//! the other tasks stop after their current item, and is what the caller gets back.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

use crate::error::Result;

pub struct WorkQueue<T> {
    items: Mutex<VecDeque<T>>,
}

impl<T> WorkQueue<T> {
    pub fn pop(&self) -> Option<T> {
        self.items.lock().unwrap().pop_front()
    }

    fn close(&self) {
        self.items.lock().unwrap().clear();
    }
}

/// Runs `work` in up to `workers` tasks (never more than there are items); each
/// task's result comes back in the returned Vec.
pub async fn run_workers<T, R, F, Fut>(workers: usize, items: impl IntoIterator<Item = T>, work: F) -> Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Arc<WorkQueue<T>>) -> Fut,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    let items: VecDeque<T> = items.into_iter().collect();
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let workers = workers.max(1).min(items.len());
    let queue = Arc::new(WorkQueue { items: Mutex::new(items) });
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let (task, queue) = (work(queue.clone()), queue.clone());
        set.spawn(async move {
            let result = task.await;
            if result.is_err() {
                queue.close();
            }
            result
        });
    }
    let (mut results, mut first_error) = (Vec::new(), None);
    while let Some(joined) = set.join_next().await {
        match joined.expect("worker task panicked") {
            Ok(r) => results.push(r),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(results), Err)
}

/// This host's name, for `pgshift status` (a process's id adds its pid: `host:pid`).
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
