//! Removes an account's secrets from vendor text, in every form a vendor could echo them in:
//! a vendor that repeats the request in its error (headers, query, body) must not turn the
//! broker into a way to read the stored credential.
//!
//! The forms: the raw password and token (which covers `Bearer <token>` and a raw
//! `Authorization` value), base64 of `user:password` and `user:token` (which covers `Basic …`),
//! base64 of the password and of the token alone, each base64 in standard and URL-safe
//! alphabets with and without padding, the URL-encoded forms (percent-encoding with upper- or
//! lower-case hex, and `+` for space) of the secrets and of their base64 forms, and the
//! JSON-escaped form.

use base64::Engine as _;

use super::Credential;

/// What replaces a secret.
const REDACTED: &str = "[redacted]";

/// Every encoded form of one account's secrets, computed once per vendor call.
#[derive(Default)]
pub(crate) struct Scrubber {
    /// Longest first, so a form is removed whole before a shorter one inside it could be.
    needles: Vec<String>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("forms", &self.needles.len())
            .finish()
    }
}

impl Scrubber {
    /// The forms of `credential`'s password and token; the user name alone is no secret.
    pub(crate) fn new(credential: &Credential) -> Self {
        let mut needles = Vec::new();
        for secret in [&credential.password, &credential.token] {
            if secret.is_empty() {
                continue;
            }
            needles.push(secret.clone());
            needles.extend(url_forms(secret));
            if let Ok(json) = serde_json::to_string(secret) {
                needles.push(json.trim_matches('"').to_owned());
            }
            let pair = format!("{}:{secret}", credential.username);
            // Base64 forms, and those forms URL-encoded (`+`, `/` and `=` get escaped when a
            // vendor echoes a header inside a query string).
            for encoded in base64_forms(secret.as_bytes())
                .into_iter()
                .chain(base64_forms(pair.as_bytes()))
            {
                needles.extend(url_forms(&encoded));
                needles.push(encoded);
            }
        }
        needles.retain(|n| !n.is_empty());
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Self { needles }
    }

    /// `text` with every form replaced by `[redacted]`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        self.needles
            .iter()
            .fold(text.to_owned(), |acc, needle| acc.replace(needle, REDACTED))
    }
}

fn base64_forms(bytes: &[u8]) -> [String; 4] {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
    ]
}

/// Percent-encoding of every byte outside RFC 3986's unreserved set, upper- and lower-case
/// hex, and the form encoding that writes a space as `+`.
fn url_forms(secret: &str) -> [String; 3] {
    let mut upper = String::new();
    let mut lower = String::new();
    let mut form = String::new();
    for byte in secret.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            for out in [&mut upper, &mut lower, &mut form] {
                out.push(char::from(byte));
            }
        } else {
            upper.push_str(&format!("%{byte:02X}"));
            lower.push_str(&format!("%{byte:02x}"));
            if byte == b' ' {
                form.push('+');
            } else {
                form.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    [upper, lower, form]
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    fn credential() -> Credential {
        Credential {
            username: "admin".into(),
            password: "p@ss w/rd+\"1\"".into(),
            token: "tok~en/123?".into(),
        }
    }

    #[test]
    fn every_encoded_form_is_removed() {
        let c = credential();
        let scrubber = Scrubber::new(&c);
        let basic = STANDARD.encode(format!("{}:{}", c.username, c.password));
        let forms = [
            c.password.clone(),
            c.token.clone(),
            format!("Basic {basic}"),
            basic.trim_end_matches('=').to_owned(),
            format!("Bearer {}", c.token),
            STANDARD.encode(&c.password),
            URL_SAFE_NO_PAD.encode(&c.password),
            STANDARD.encode(&c.token),
            STANDARD.encode(format!("{}:{}", c.username, c.token)),
            "p%40ss%20w%2Frd%2B%221%22".to_owned(),
            "p%40ss%20w%2frd%2b%221%22".to_owned(),
            "p%40ss+w%2Frd%2B%221%22".to_owned(),
            "tok~en%2F123%3F".to_owned(),
            r#"p@ss w/rd+\"1\""#.to_owned(),
            url_forms(&basic)[0].clone(),
            url_forms(&STANDARD.encode(&c.token))[1].clone(),
        ];
        for form in forms {
            let text = format!("echo: authorization={form}; body={{}}");
            let scrubbed = scrubber.scrub(&text);
            assert!(!scrubbed.contains(&form), "{form} survived: {scrubbed}");
            assert!(scrubbed.contains(REDACTED), "{scrubbed}");
            assert!(
                scrubbed.starts_with("echo: authorization=") && scrubbed.ends_with("; body={}"),
                "only the secret goes: {scrubbed}"
            );
        }
    }

    #[test]
    fn text_without_secrets_is_kept_and_empty_secrets_scrub_nothing() {
        let scrubber = Scrubber::new(&credential());
        assert_eq!(scrubber.scrub("no such user admin"), "no such user admin");
        let empty = Scrubber::new(&Credential::default());
        assert_eq!(empty.scrub("anything at all"), "anything at all");
    }

    #[test]
    fn debug_shows_no_form() {
        let text = format!("{:?}", Scrubber::new(&credential()));
        assert!(!text.contains("p@ss") && !text.contains("tok~en"), "{text}");
    }
}
