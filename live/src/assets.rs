//! The web page, built from web/src by `scripts/web build` into web/dist and compiled in, so
//! the binary serves it with no files beside it and nothing from a CDN.

/// `GET /`.
pub const INDEX_HTML: &[u8] = include_bytes!("../../web/dist/index.html");
/// `GET /assets/app.js`: the page's code and the graph library, bundled.
pub const APP_JS: &[u8] = include_bytes!("../../web/dist/app.js");
/// `GET /assets/app.css`.
pub const APP_CSS: &[u8] = include_bytes!("../../web/dist/app.css");
