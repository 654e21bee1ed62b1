//! The browser client's files (`web/`), embedded in the binary: a reactor serves them from
//! memory and never opens a file, and the page a daemon serves is always the one built with it.

use super::assets::Asset;

/// Every file of the page, at the path it is served at.
pub static FILES: &[Asset<'static>] = &[
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/app.js"),
    },
    Asset {
        path: "/proto.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/proto.js"),
    },
    Asset {
        path: "/resume.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/resume.js"),
    },
    Asset {
        path: "/outbox.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/outbox.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/style.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../web/favicon.svg"),
    },
];

/// The settings of the web listeners, shared by every reactor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebSettings {
    /// Origins besides the page's own whose pages may open the WebSocket.
    pub allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_every_file_it_loads_are_embedded_within_the_size_budget() {
        let index = FILES.iter().find(|f| f.path == "/index.html");
        let Some(index) = index else {
            panic!("no index.html");
        };
        let page = String::from_utf8_lossy(index.bytes);
        for file in FILES.iter().filter(|f| f.path != "/index.html") {
            let name = file.path.trim_start_matches('/');
            let referenced = page.contains(&format!("\"{name}\""))
                || FILES
                    .iter()
                    .any(|f| String::from_utf8_lossy(f.bytes).contains(&format!("./{name}")));
            assert!(referenced, "{name} is embedded but nothing loads it");
        }
        let total: usize = FILES.iter().map(|f| f.bytes.len()).sum();
        // Version 2 (outbox, direct rooms, who is here) took the page past 32 KiB.
        assert!(
            total <= 48 * 1024,
            "the page weighs {total} bytes, over 48 KiB"
        );
    }
}
