//! The files of the web client, served from a table the binary embeds (`include_bytes!`):
//! no disk access on a reactor, no path ever joined onto a directory, so no request can reach
//! a file outside the table.

/// One embedded file: the path it is served at, its `Content-Type`, its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset<'a> {
    pub path: &'a str,
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

/// The asset served at `path` (without its query): an exact match, else `/index.html` for `/`.
pub fn find<'a>(assets: &'a [Asset<'a>], path: &str) -> Option<&'a Asset<'a>> {
    let exact = |path: &str| assets.iter().find(|asset| asset.path == path);
    exact(path).or_else(|| {
        if path == "/" {
            exact("/index.html")
        } else {
            None
        }
    })
}
