//! A scripted browser for the web flows: follows redirects itself, keeps cookies per host and
//! path the way a browser does (reading `Set-Cookie` attributes, so tests can check them), and
//! submits forms. It does what a person's browser does between keyward, the test identity
//! provider and the fake providers; headless Chromium covers the real thing
//! (tests/it/remote_browser.rs).

use std::sync::Mutex;

/// One stored cookie.
#[derive(Debug, Clone)]
pub struct Cookie {
    /// `host:port` it came from.
    pub origin: String,
    pub name: String,
    pub value: String,
    pub path: String,
    /// The attributes as sent (`Secure`, `HttpOnly`, `SameSite=Lax`, …).
    pub attributes: Vec<String>,
}

/// A page the browser ended on.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub url: url::Url,
    pub body: String,
    /// Every URL visited on the way, the last one included.
    pub visited: Vec<url::Url>,
}

pub struct Browser {
    client: reqwest::Client,
    jar: Mutex<Vec<Cookie>>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

fn origin(url: &url::Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: Mutex::default(),
        }
    }

    /// The cookie `name` this browser holds, if any.
    pub fn cookie(&self, name: &str) -> Option<Cookie> {
        self.jar
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.name == name)
            .cloned()
    }

    /// Forget every cookie (a fresh browser profile).
    pub fn clear(&self) {
        self.jar.lock().unwrap().clear();
    }

    fn cookie_header(&self, url: &url::Url) -> Option<String> {
        let jar = self.jar.lock().unwrap();
        let here = origin(url);
        let pairs: Vec<String> = jar
            .iter()
            .filter(|c| c.origin == here && url.path().starts_with(&c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn store(&self, url: &url::Url, set_cookie: &str) {
        let mut parts = set_cookie.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let attributes: Vec<String> = parts.map(String::from).collect();
        let path = attributes
            .iter()
            .find_map(|a| a.strip_prefix("Path="))
            .unwrap_or("/")
            .to_string();
        let expired = attributes.iter().any(|a| a == "Max-Age=0");
        let mut jar = self.jar.lock().unwrap();
        let here = origin(url);
        jar.retain(|c| !(c.origin == here && c.name == name && c.path == path));
        if !expired {
            jar.push(Cookie {
                origin: here,
                name: name.to_string(),
                value: value.to_string(),
                path,
                attributes,
            });
        }
    }

    /// GET `url` and follow redirects (at most 20).
    pub async fn get(&self, url: &str) -> Page {
        self.go(reqwest::Method::GET, url::Url::parse(url).unwrap(), None)
            .await
    }

    /// POST a form to `url` (with `origin` as the browser's `Origin`) and follow redirects.
    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.go(
            reqwest::Method::POST,
            url::Url::parse(url).unwrap(),
            Some(body),
        )
        .await
    }

    async fn go(
        &self,
        mut method: reqwest::Method,
        mut url: url::Url,
        mut form: Option<String>,
    ) -> Page {
        let mut visited = Vec::new();
        for _ in 0..20 {
            visited.push(url.clone());
            let mut request = self.client.request(method.clone(), url.clone());
            if let Some(cookies) = self.cookie_header(&url) {
                request = request.header("cookie", cookies);
            }
            if let Some(body) = form.take() {
                let own = url.origin().ascii_serialization();
                request = request
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("origin", own)
                    .body(body);
            }
            let response = request.send().await.expect("the page answers");
            for value in response.headers().get_all("set-cookie") {
                self.store(&url, value.to_str().unwrap());
            }
            let status = response.status().as_u16();
            if (300..400).contains(&status) {
                let location = response.headers()["location"].to_str().unwrap().to_string();
                url = url.join(&location).unwrap();
                method = reqwest::Method::GET;
                continue;
            }
            return Page {
                status,
                url,
                body: response.text().await.unwrap(),
                visited,
            };
        }
        panic!("more than 20 redirects: {visited:?}");
    }
}

/// The value of the hidden form field `name` on a page.
pub fn hidden_field(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_string())
}
