//! Server streams: the boxed stream type of every streaming RPC, and the one "watch a job until
//! it is final" stream that index jobs, downloads and mapping jobs all answer with.

use std::time::Duration;

use tokio::sync::watch;

/// A boxed server stream, the associated stream type of every streaming RPC.
pub type BoxStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

/// How often a job watch sends, besides on every change.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pace {
    /// Send at least this often even without a change (live rates and ETAs move on their own).
    pub heartbeat: Option<Duration>,
    /// Send at most once per this interval (a busy job changes thousands of times a second).
    pub min_gap: Duration,
}

/// Streams a job: one message now, then one per change of `changes` (paced by `pace`), ending
/// after the message `read` marks final, or when the caller goes away. `read` turns the
/// latest value into the message and whether the job is final.
pub fn watch_job<S, M>(
    mut changes: watch::Receiver<S>,
    pace: Pace,
    mut read: impl FnMut(&S) -> (M, bool) + Send + 'static,
) -> BoxStream<M>
where
    S: Send + Sync + 'static,
    M: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (message, last) = read(&changes.borrow_and_update());
            if tx.send(Ok(message)).await.is_err() || last {
                return;
            }
            let changed = match pace.heartbeat {
                Some(every) => tokio::time::timeout(every, changes.changed())
                    .await
                    .unwrap_or(Ok(())),
                None => changes.changed().await,
            };
            if changed.is_err() {
                // The job's owner is gone: nothing changes any more but the heartbeat.
                match pace.heartbeat {
                    Some(every) => tokio::time::sleep(every).await,
                    None => return,
                }
            }
            if !pace.min_gap.is_zero() {
                tokio::time::sleep(pace.min_gap).await;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
