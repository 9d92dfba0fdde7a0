//! The dashboard's static assets, compiled into the binary and served at
//! addresses that carry a hash of their content (`/static/app.<hash>.css`),
//! so they can be cached for a year and change address when they change.

use super::secure;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

pub struct Asset {
    /// The address it is served at, hash included.
    pub path: String,
    body: &'static [u8],
    content_type: &'static str,
}

impl Asset {
    fn new(stem: &str, ext: &str, body: &'static [u8], content_type: &'static str) -> Self {
        let digest = Sha256::digest(body);
        let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            path: format!("/static/{stem}.{hash}.{ext}"),
            body,
            content_type,
        }
    }
}

pub struct Assets {
    pub css: Asset,
    pub js: Asset,
    pub icon: Asset,
}

pub static ASSETS: LazyLock<Assets> = LazyLock::new(|| Assets {
    css: Asset::new(
        "app",
        "css",
        include_bytes!("../../../../web/static/app.css"),
        "text/css; charset=utf-8",
    ),
    js: Asset::new(
        "app",
        "js",
        include_bytes!("../../../../web/static/app.js"),
        "text/javascript; charset=utf-8",
    ),
    icon: Asset::new(
        "icon",
        "svg",
        include_bytes!("../../../../web/static/icon.svg"),
        "image/svg+xml",
    ),
});

/// `GET /static/{file}`: an asset by its hashed name; any other name is 404.
pub async fn serve(file: web::Path<String>) -> HttpResponse {
    let wanted = format!("/static/{file}");
    let assets = &*ASSETS;
    let Some(asset) = [&assets.css, &assets.js, &assets.icon]
        .into_iter()
        .find(|a| a.path == wanted)
    else {
        return secure(HttpResponse::build(StatusCode::NOT_FOUND))
            .content_type("text/plain; charset=utf-8")
            .body("no such asset");
    };
    secure(HttpResponse::build(StatusCode::OK))
        .content_type(asset.content_type)
        .insert_header(("Cache-Control", "public, max-age=31536000, immutable"))
        .body(asset.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_addresses_carry_a_content_hash() {
        let a = &*ASSETS;
        for (asset, ext) in [(&a.css, "css"), (&a.js, "js"), (&a.icon, "svg")] {
            let name = asset.path.strip_prefix("/static/").unwrap_or_default();
            let parts: Vec<&str> = name.split('.').collect();
            assert_eq!(parts.len(), 3, "{name}");
            assert_eq!(parts[1].len(), 12, "{name}");
            assert!(parts[1].chars().all(|c| c.is_ascii_hexdigit()), "{name}");
            assert_eq!(parts[2], ext);
        }
    }
}
