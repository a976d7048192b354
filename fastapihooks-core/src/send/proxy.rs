//! An egress proxy: deliveries leave through a forward proxy, so that
//! receivers see a few static addresses (the way Svix deployments use
//! Smokescreen).
//!
//! `https` receivers are reached through a `CONNECT` tunnel, with TLS end to
//! end between this process and the receiver; `http` receivers with
//! absolute-form requests. Either way the [network guard](super::guard)
//! vets the receiver first, and the proxy is told the vetted *address*, not
//! the host name: a proxy that resolved the name again could be sent
//! somewhere else by a DNS answer that changed in between. (The `Host`
//! header and the TLS server name stay the host name.) The proxy itself is
//! the operator's and is not vetted.
//!
//! Proxy variables of the environment (`HTTPS_PROXY`, `NO_PROXY`, ...) are
//! ignored unless the operator asks for them with [`Proxy::from_env`].

use std::fmt;

use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::Matcher;
use url::Url;

/// Where deliveries go to reach their receivers: a forward proxy for every
/// receiver, but those its no-proxy list names.
///
/// ```
/// # use fastapihooks_core::send::Proxy;
/// let proxy = Proxy::new("http://user:pass@127.0.0.1:3128")?.no_proxy("localhost,.internal.example");
/// assert_eq!(format!("{proxy:?}"), r#"Proxy(http://[redacted]@127.0.0.1:3128/, no_proxy: "localhost,.internal.example")"#);
/// # Ok::<(), fastapihooks_core::send::InvalidProxy>(())
/// ```
#[derive(Clone)]
pub struct Proxy {
    source: Source,
    no_proxy: String,
    matcher: std::sync::Arc<Matcher>,
}

#[derive(Clone)]
enum Source {
    Url(Url),
    Env,
}

/// A proxy URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidProxy {
    /// Not a URL.
    #[error("the proxy URL is not a valid URL")]
    Url,
    /// A scheme other than `http`.
    #[error(
        "the proxy URL must start with http:// (TLS to the proxy itself is not supported; https receivers are still TLS end to end)"
    )]
    Scheme,
    /// No host.
    #[error("the proxy URL has no host")]
    NoHost,
    /// A path, query or fragment, which a proxy URL cannot use.
    #[error("the proxy URL must be only scheme, host and port (with optional credentials)")]
    Path,
}

/// The proxy one connection goes through.
#[derive(Debug)]
pub(crate) struct Route {
    /// The proxy's host and port.
    pub(crate) proxy: Uri,
    /// `Proxy-Authorization`, when the proxy URL carried credentials.
    pub(crate) auth: Option<HeaderValue>,
}

impl Proxy {
    /// Every delivery goes through the proxy at `url`: `http://host:port`,
    /// with credentials for `Proxy-Authorization: Basic` as
    /// `http://user:password@host:port`.
    ///
    /// # Errors
    /// The URL is not an `http` URL made of a host, an optional port and
    /// optional credentials.
    pub fn new(url: &str) -> Result<Self, InvalidProxy> {
        let parsed = Url::parse(url).map_err(|_| InvalidProxy::Url)?;
        if parsed.scheme() != "http" {
            return Err(InvalidProxy::Scheme);
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(InvalidProxy::NoHost);
        }
        if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(InvalidProxy::Path);
        }
        let matcher = Matcher::builder().all(parsed.as_str().to_owned()).build();
        Ok(Self { source: Source::Url(parsed), no_proxy: String::new(), matcher: matcher.into() })
    }

    /// The proxy the environment names, as curl reads it: `HTTPS_PROXY` for
    /// `https` receivers, `HTTP_PROXY` for `http` ones, `ALL_PROXY` for both
    /// (upper or lower case), and `NO_PROXY` for the hosts that bypass it.
    /// `None` when none of the proxy variables is set.
    pub fn from_env() -> Option<Self> {
        let set = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        set.then(|| Self { source: Source::Env, no_proxy: String::new(), matcher: Matcher::from_env().into() })
    }

    /// Receivers that bypass the proxy: `NO_PROXY` syntax, a comma-separated
    /// list of host names (a name also covers its subdomains; a leading `.`
    /// only the subdomains), IP addresses and CIDR networks, or `*` for all.
    /// Replaces the environment's `NO_PROXY` for a proxy [from the
    /// environment](Self::from_env).
    #[must_use]
    pub fn no_proxy(mut self, list: &str) -> Self {
        let mut builder = match &self.source {
            Source::Url(url) => Matcher::builder().all(url.as_str().to_owned()),
            Source::Env => {
                let var = |a: &str, b: &str| std::env::var(a).or_else(|_| std::env::var(b)).unwrap_or_default();
                Matcher::builder()
                    .all(var("ALL_PROXY", "all_proxy"))
                    .http(var("HTTP_PROXY", "http_proxy"))
                    .https(var("HTTPS_PROXY", "https_proxy"))
            }
        };
        builder = builder.no(list.to_owned());
        self.no_proxy = list.to_owned();
        self.matcher = builder.build().into();
        self
    }

    /// The proxy to reach `url` through, or `None` to connect directly.
    pub(crate) fn route(&self, url: &Url) -> Option<Route> {
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let dst: Uri = format!("{}://{host}:{port}", url.scheme()).parse().ok()?;
        let intercept = self.matcher.intercept(&dst)?;
        Some(Route { proxy: intercept.uri().clone(), auth: intercept.basic_auth().cloned() })
    }
}

/// Never shows credentials.
impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Url(url) => {
                let credentials = !url.username().is_empty() || url.password().is_some();
                let host = &url[url::Position::BeforeHost..url::Position::AfterPort];
                let at = if credentials { "[redacted]@" } else { "" };
                write!(f, "Proxy(http://{at}{host}/")?;
            }
            Source::Env => f.write_str("Proxy(from the environment")?,
        }
        if !self.no_proxy.is_empty() {
            write!(f, ", no_proxy: {:?}", self.no_proxy)?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_are_checked() {
        assert_eq!(Proxy::new("not a url").unwrap_err(), InvalidProxy::Url);
        assert_eq!(Proxy::new("https://proxy:3128").unwrap_err(), InvalidProxy::Scheme);
        assert_eq!(Proxy::new("socks5://proxy:1080").unwrap_err(), InvalidProxy::Scheme);
        assert_eq!(Proxy::new("http://proxy:3128/path").unwrap_err(), InvalidProxy::Path);
        assert_eq!(Proxy::new("http://proxy:3128/?q").unwrap_err(), InvalidProxy::Path);
        assert!(Proxy::new("http://127.0.0.1:3128").is_ok());
        assert!(Proxy::new("http://[::1]:3128/").is_ok());
    }

    #[test]
    fn every_receiver_goes_through_the_proxy_but_the_excluded_ones() {
        let proxy = Proxy::new("http://u:p%40ss@127.0.0.1:3128").unwrap().no_proxy("internal.example,10.0.0.0/8");
        let route = proxy.route(&Url::parse("https://hooks.example.com/in").unwrap()).unwrap();
        assert_eq!(route.proxy, "http://127.0.0.1:3128/");
        // "u:p@ss", base64.
        assert_eq!(route.auth.unwrap(), "Basic dTpwQHNz");
        assert!(proxy.route(&Url::parse("http://hooks.example.com/in").unwrap()).is_some());
        assert!(proxy.route(&Url::parse("http://a.internal.example/in").unwrap()).is_none());
        assert!(proxy.route(&Url::parse("http://10.1.2.3/in").unwrap()).is_none());
        let plain = Proxy::new("http://127.0.0.1:3128").unwrap();
        assert!(plain.route(&Url::parse("http://x.example/").unwrap()).unwrap().auth.is_none());
    }

    #[test]
    fn debug_never_shows_credentials() {
        let proxy = Proxy::new("http://user:hunter2@proxy.example:3128").unwrap();
        let shown = format!("{proxy:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("user"), "{shown}");
        assert_eq!(shown, "Proxy(http://[redacted]@proxy.example:3128/)");
    }
}
