//! The few pages a browser sees: sign-in, sign-out and errors. Plain HTML forms, no
//! JavaScript, labelled inputs, one `main` landmark, errors announced with `role=alert`.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body};

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f6f8;color:#1a1d21}\
main{max-width:26rem;margin:12vh auto;padding:2rem;background:#fff;border-radius:12px;box-shadow:0 1px 4px #0002}\
h1{font-size:1.4rem;margin:0 0 1rem}label{display:block;font-weight:600;margin-bottom:.3rem}\
input{box-sizing:border-box;width:100%;font:inherit;padding:.6rem;border:1px solid #8a939c;border-radius:6px}\
input:focus,button:focus{outline:3px solid #1d6fe0;outline-offset:1px}\
button{margin-top:1rem;width:100%;font:inherit;font-weight:600;padding:.6rem;border:0;border-radius:6px;background:#1d6fe0;color:#fff;cursor:pointer}\
.hint{color:#4d5660;font-size:.9rem}.alert{background:#fdecec;color:#8a1414;padding:.7rem;border-radius:6px;margin-bottom:1rem}\
a{color:#1d6fe0}";

fn page(status: StatusCode, title: &str, content: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{STYLE}</style></head>\
<body><main>{content}</main></body></html>",
        escape(title)
    );
    let mut res = Response::new(body::full(html));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https: http:; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    res
}

/// The sign-in form, posting to `action`, with `handle` filled in and an optional error
/// above it.
pub fn sign_in(app: &str, action: &str, return_to: &str, handle: &str, error: Option<&str>) -> Response<Body> {
    let alert = error.map_or(String::new(), |e| format!("<p class=\"alert\" role=\"alert\">{}</p>", escape(e)));
    let content = format!(
        "<h1>Sign in to {app}</h1>{alert}\
<form method=\"post\" action=\"{action}\">\
<input type=\"hidden\" name=\"return_to\" value=\"{return_to}\">\
<label for=\"handle\">Your handle</label>\
<input id=\"handle\" name=\"handle\" type=\"text\" value=\"{handle}\" required autofocus autocomplete=\"username\" \
autocapitalize=\"none\" spellcheck=\"false\" placeholder=\"alice.bsky.social\" aria-describedby=\"handle-hint\">\
<p id=\"handle-hint\" class=\"hint\">You will confirm at your account's server. atgate never sees your password.</p>\
<button type=\"submit\">Sign in</button></form>",
        app = escape(app),
        action = escape(action),
        return_to = escape(return_to),
        handle = escape(handle),
    );
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    page(status, &format!("Sign in to {app}"), &content)
}

/// The sign-out confirmation (a form, so that a link or image cannot sign anyone out).
pub fn sign_out(action: &str, who: &str) -> Response<Body> {
    let content = format!(
        "<h1>Sign out</h1><p>You are signed in as <strong>{}</strong>.</p>\
<form method=\"post\" action=\"{}\"><button type=\"submit\">Sign out</button></form>",
        escape(who),
        escape(action)
    );
    page(StatusCode::OK, "Sign out", &content)
}

/// An error page with a way back to the sign-in form.
pub fn error(status: StatusCode, title: &str, message: &str, retry: &str) -> Response<Body> {
    let content = format!(
        "<h1>{}</h1><p class=\"alert\" role=\"alert\">{}</p><p><a href=\"{}\">Try signing in again</a></p>",
        escape(title),
        escape(message),
        escape(retry)
    );
    page(status, title, &content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_open_markup() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
