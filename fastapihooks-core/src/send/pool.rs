//! Idle keep-alive connections, kept for reuse.
//!
//! A connection belongs to the task that sends a delivery for the whole
//! exchange: there is no connection task and no channel in between. After a
//! complete exchange the server lets us keep, the connection goes back to
//! the pool, keyed by endpoint (`scheme://host[:port]`). Idle connections
//! older than [`IDLE_TIMEOUT`] are dropped; at most
//! [`MAX_IDLE_PER_ENDPOINT`] are kept per endpoint. The pool's lock is held
//! only to push or pop: sockets are closed after it is released.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::conn::Conn;

/// Idle connections older than this are closed, not reused.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle connections kept for one endpoint.
pub(crate) const MAX_IDLE_PER_ENDPOINT: usize = 64;
/// How often idle connections of every endpoint are checked for expiry (on
/// the next return of a connection).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Idle {
    /// Per endpoint, oldest first.
    by_endpoint: HashMap<Box<str>, Vec<Conn>, foldhash::fast::RandomState>,
    last_sweep: Option<Instant>,
}

/// Idle keep-alive connections, by endpoint. Dropping the pool closes them.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<Idle>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.lock();
        f.debug_struct("Pool")
            .field("endpoints", &idle.by_endpoint.len())
            .field("idle", &idle.by_endpoint.values().map(Vec::len).sum::<usize>())
            .finish()
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection to `endpoint` that is still
    /// open, if any.
    pub(crate) fn take(&self, endpoint: &str) -> Option<Conn> {
        loop {
            let now = Instant::now();
            let (conn, expired) = {
                let mut idle = self.lock();
                let list = idle.by_endpoint.get_mut(endpoint)?;
                match list.pop() {
                    None => return None,
                    // The newest has expired: so have all the older ones.
                    Some(c) if now.duration_since(c.idle_since) > IDLE_TIMEOUT => {
                        let mut expired = std::mem::take(list);
                        expired.push(c);
                        (None, expired)
                    }
                    Some(c) => (Some(c), Vec::new()),
                }
            };
            drop(expired); // closes them, outside the lock
            match conn {
                None => return None,
                // Closed by the server while idle, or sent stray bytes: try the next one.
                Some(mut c) => {
                    if c.is_reusable() {
                        return Some(c);
                    }
                }
            }
        }
    }

    /// Keeps `conn`, idle, for the next delivery to `endpoint`.
    pub(crate) fn put(&self, endpoint: &str, mut conn: Conn) {
        let now = Instant::now();
        conn.idle_since = now;
        let mut closed = Vec::new();
        {
            let mut idle = self.lock();
            if idle.last_sweep.is_none_or(|t| now.duration_since(t) > SWEEP_EVERY) {
                idle.last_sweep = Some(now);
                sweep(&mut idle.by_endpoint, now, &mut closed);
            }
            let list = match idle.by_endpoint.get_mut(endpoint) {
                Some(list) => list,
                None => idle.by_endpoint.entry(endpoint.into()).or_default(),
            };
            if list.len() < MAX_IDLE_PER_ENDPOINT {
                list.push(conn);
            } else {
                closed.push(conn);
            }
        }
        drop(closed); // closes them, outside the lock
    }
}

/// Moves every expired connection to `closed` and forgets endpoints left
/// without idle connections, so a pool whose endpoints went quiet does not
/// hold their sockets until they are next used.
fn sweep(
    by_endpoint: &mut HashMap<Box<str>, Vec<Conn>, foldhash::fast::RandomState>,
    now: Instant,
    closed: &mut Vec<Conn>,
) {
    by_endpoint.retain(|_, list| {
        let expired = list.iter().take_while(|c| now.duration_since(c.idle_since) > IDLE_TIMEOUT).count();
        closed.extend(list.drain(..expired));
        !list.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::send::conn::{Io, Via};

    async fn pair(listener: &TcpListener) -> (Conn, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Conn::new(Io::Plain(client), Via::Direct), server)
    }

    #[tokio::test]
    async fn idle_connections_are_reused_newest_first_and_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let mut servers = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..MAX_IDLE_PER_ENDPOINT + 2 {
            let (conn, server) = pair(&listener).await;
            ports.push(conn.local_port());
            pool.put("http://a", conn);
            servers.push(server);
        }
        assert!(pool.take("http://b").is_none());
        let newest_kept = ports[MAX_IDLE_PER_ENDPOINT - 1];
        assert_eq!(pool.take("http://a").unwrap().local_port(), newest_kept);
        let mut n = 1;
        while pool.take("http://a").is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_IDLE_PER_ENDPOINT, "extra connections were closed, not kept");
    }

    #[tokio::test]
    async fn connections_closed_by_the_server_or_expired_are_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let (conn, server) = pair(&listener).await;
        pool.put("http://a", conn);
        drop(server);
        // Let the reactor see the FIN.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take("http://a").is_none(), "a connection the server closed is dropped");

        let (mut conn, _server) = pair(&listener).await;
        pool.put("http://a", conn);
        conn = pool.take("http://a").unwrap();
        pool.put("http://a", conn);
        pool.lock().by_endpoint.get_mut("http://a").unwrap()[0].idle_since -= IDLE_TIMEOUT + Duration::from_secs(1);
        assert!(pool.take("http://a").is_none(), "an expired connection is dropped");
    }

    #[tokio::test]
    async fn quiet_endpoints_are_swept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let (conn, _s1) = pair(&listener).await;
        pool.put("http://quiet", conn);
        {
            let mut idle = pool.lock();
            idle.by_endpoint.get_mut("http://quiet").unwrap()[0].idle_since -= IDLE_TIMEOUT + Duration::from_secs(1);
            idle.last_sweep = Some(Instant::now() - SWEEP_EVERY - Duration::from_secs(1));
        }
        let (conn, _s2) = pair(&listener).await;
        pool.put("http://busy", conn);
        let idle = pool.lock();
        assert!(!idle.by_endpoint.contains_key("http://quiet"));
        assert_eq!(idle.by_endpoint["http://busy"].len(), 1);
    }
}
