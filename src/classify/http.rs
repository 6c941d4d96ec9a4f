//! `http:<url>`: an OpenAI-compatible chat-completions endpoint as a classifier — what vLLM,
//! llama.cpp's server, Ollama and hosted services speak.
//!
//! `<url>` is the API base (`http://localhost:8000/v1`) or the full
//! `.../chat/completions` URL. Each case is one request: the prompt as the system message, the
//! case as JSON in the user message, `response_format: {"type": "json_object"}`, temperature 0.
//! The API key comes from an environment variable (`OPENAI_API_KEY` unless `--api-key-env`
//! names another; none is sent when it is unset, as local servers need none).
//!
//! 429, 5xx, timeouts and connection errors are retried with exponential backoff (honouring
//! `Retry-After` up to 30 s); other statuses are not. A malformed answer, a refusal or a
//! request that keeps failing is an error for that case, never a crash.
//!
//! The client is reqwest's blocking one: call `classify` from a plain thread (or tokio's
//! `spawn_blocking`), never from inside an async task.

use super::{case_json, parse_answer, Classifier, ClassifyError, FailureCase, Options, Verdict};
use serde_json::{json, Value};
use std::time::Duration;

pub struct HttpClassifier {
    url: String,
    model: Option<String>,
    prompt: String,
    api_key: Option<String>,
    retries: u32,
    backoff: Duration,
    timeout: Duration,
    client: reqwest::blocking::Client,
}

impl HttpClassifier {
    pub fn new(url: &str, opts: &Options) -> Result<HttpClassifier, String> {
        let url = url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "http: needs a URL, e.g. --classifier http:http://localhost:8000/v1 (got {url:?})"
            ));
        }
        let url = if url.trim_end_matches('/').ends_with("/chat/completions") {
            url.trim_end_matches('/').to_string()
        } else {
            format!("{}/chat/completions", url.trim_end_matches('/'))
        };
        let client = reqwest::blocking::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HttpClassifier {
            url,
            model: opts.model.clone(),
            prompt: opts.prompt.clone(),
            api_key: std::env::var(&opts.api_key_env)
                .ok()
                .filter(|k| !k.trim().is_empty()),
            retries: opts.http_retries,
            backoff: opts.http_backoff,
            timeout: opts.timeout,
            client,
        })
    }

    /// The chat-completions request for one case.
    pub fn request_body(&self, case: &FailureCase) -> Value {
        json!({
            "model": self.model.clone().unwrap_or_else(|| "default".into()),
            "messages": [
                {"role": "system", "content": self.prompt},
                {"role": "user", "content": format!(
                    "Classify this failed job. Answer with the JSON object only.\n{}",
                    case_json(case)
                )},
            ],
            "response_format": {"type": "json_object"},
            "temperature": 0,
        })
    }

    /// One attempt: `Ok(text)` of the answer, or the error and whether to try again.
    fn attempt(&self, body: &str) -> Result<String, (ClassifyError, bool, Option<Duration>)> {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = match req.send() {
            Ok(r) => r,
            // A timeout is the case's whole budget: not retried (the README promises retries
            // on 429, 5xx and connection errors only).
            Err(e) if e.is_timeout() => {
                return Err((ClassifyError::Timeout(self.timeout), false, None))
            }
            Err(e) => {
                return Err((
                    ClassifyError::Unavailable(format!("cannot reach {}: {e}", self.url)),
                    true,
                    None,
                ))
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(30)));
        // At most 4 MiB of answer: an endpoint that streams without end is an error, not a
        // memory leak.
        const MAX_ANSWER: u64 = 4 << 20;
        let mut buf = Vec::new();
        let read = {
            use std::io::Read;
            resp.take(MAX_ANSWER + 1).read_to_end(&mut buf)
        };
        if buf.len() as u64 > MAX_ANSWER {
            return Err((
                ClassifyError::BadAnswer(format!("the answer is larger than {MAX_ANSWER} bytes")),
                false,
                None,
            ));
        }
        let text = match read {
            Ok(_) => String::from_utf8_lossy(&buf).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err((ClassifyError::Timeout(self.timeout), false, None))
            }
            Err(e) => {
                return Err((
                    ClassifyError::Unavailable(format!("reading the answer: {e}")),
                    true,
                    None,
                ))
            }
        };
        if !status.is_success() {
            let again = status.as_u16() == 429 || status.is_server_error();
            return Err((
                ClassifyError::Unavailable(format!(
                    "{} answered HTTP {}: {}",
                    self.url,
                    status.as_u16(),
                    super::clip(&text, 200)
                )),
                again,
                retry_after,
            ));
        }
        Ok(text)
    }
}

/// The answer text of a chat-completions response.
fn answer_of(response: &str) -> Result<String, ClassifyError> {
    let v: Value = serde_json::from_str(response).map_err(|e| {
        ClassifyError::BadAnswer(format!(
            "the response is not chat-completions JSON ({e}): {}",
            super::clip(response, 200)
        ))
    })?;
    let msg = &v["choices"][0]["message"];
    if let Some(r) = msg["refusal"].as_str().filter(|r| !r.trim().is_empty()) {
        return Err(ClassifyError::Refused(super::clip(r, 200)));
    }
    if v["choices"][0]["finish_reason"] == "content_filter" {
        return Err(ClassifyError::Refused(
            "stopped by the content filter".into(),
        ));
    }
    msg["content"].as_str().map(str::to_string).ok_or_else(|| {
        ClassifyError::BadAnswer(format!(
            "no choices[0].message.content in {}",
            super::clip(response, 200)
        ))
    })
}

impl Classifier for HttpClassifier {
    fn name(&self) -> String {
        format!("http:{}", self.url)
    }

    /// The protocol's version; the prompt is identified by its digest, recorded apart.
    fn version(&self) -> String {
        "1".into()
    }

    fn model(&self) -> Option<String> {
        self.model.clone()
    }

    fn classify(&self, case: &FailureCase) -> Result<Verdict, ClassifyError> {
        let body = self.request_body(case).to_string();
        let mut wait = self.backoff;
        let mut tries = 0;
        loop {
            match self.attempt(&body) {
                Ok(text) => return parse_answer(&answer_of(&text)?),
                Err((e, again, retry_after)) => {
                    if !again || tries >= self.retries {
                        return Err(match e {
                            e @ ClassifyError::Timeout(_) => e,
                            e if tries > 0 => ClassifyError::Unavailable(format!(
                                "{e} (after {} attempts)",
                                tries + 1
                            )),
                            e => e,
                        });
                    }
                    std::thread::sleep(retry_after.unwrap_or(wait).max(wait));
                    wait = wait.saturating_mul(2);
                    tries += 1;
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod mock {
    //! A tiny HTTP/1.1 server on 127.0.0.1 that answers each request with the next canned
    //! response (or a function of the request body). Test-only, std only.

    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    pub struct Mock {
        pub url: String,
        pub requests: Arc<Mutex<Vec<(String, String)>>>,
    }

    /// Serve `answer(request_number, headers, body) -> (status, body)` until the process ends.
    pub fn serve(answer: impl Fn(usize, &str, &str) -> (u16, String) + Send + 'static) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let body = String::from_utf8_lossy(&body).into_owned();
                let (status, reply) = answer(n, &head, &body);
                seen.lock().unwrap().push((head, body));
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        Mock { url, requests }
    }

    /// A chat-completions response whose answer is `content`.
    pub fn completion(content: &str) -> String {
        serde_json::json!({
            "id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}]
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::mock::{completion, serve};
    use super::*;
    use crate::classify::Label;

    fn opts() -> Options {
        Options {
            model: Some("qwen-test".into()),
            timeout: Duration::from_secs(20),
            api_key_env: "TORC_LEDGER_TEST_KEY_FOR_HTTP".into(),
            http_retries: 3,
            http_backoff: Duration::from_millis(5),
            ..Options::default()
        }
    }

    fn case(tail: &str) -> FailureCase {
        FailureCase {
            id: "c9".into(),
            command: "python x.py".into(),
            return_code: 1,
            stderr_tail: tail.into(),
            ..Default::default()
        }
    }

    #[test]
    fn asks_for_json_with_the_prompt_as_system_message_and_reads_the_answer() {
        std::env::set_var("TORC_LEDGER_TEST_KEY_FOR_HTTP", "sk-test");
        let m = serve(|_, _, _| {
            (
                200,
                completion(r#"{"action": "fail", "reason": "KeyError in user code"}"#),
            )
        });
        let c = HttpClassifier::new(&m.url, &opts()).unwrap();
        let v = c.classify(&case("KeyError: 'x'")).unwrap();
        assert_eq!(
            (v.action, v.reason.as_str()),
            (Label::Fail, "KeyError in user code")
        );
        let (head, body) = m.requests.lock().unwrap()[0].clone();
        assert!(head.starts_with("POST /v1/chat/completions "), "{head}");
        assert!(head
            .to_lowercase()
            .contains("authorization: bearer sk-test"));
        let b: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(b["model"], "qwen-test");
        assert_eq!(b["response_format"]["type"], "json_object");
        assert_eq!(b["messages"][0]["role"], "system");
        assert_eq!(b["messages"][0]["content"], crate::classify::DEFAULT_PROMPT);
        assert!(b["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("KeyError: 'x'"));
    }

    #[test]
    fn retries_429_and_5xx_then_succeeds() {
        let m = serve(|n, _, _| match n {
            0 => (429, r#"{"error": "slow down"}"#.into()),
            1 => (503, "busy".into()),
            _ => (200, completion(r#"{"action": "retry", "reason": "503"}"#)),
        });
        let c = HttpClassifier::new(&m.url, &opts()).unwrap();
        assert_eq!(c.classify(&case("x")).unwrap().action, Label::Retry);
        assert_eq!(m.requests.lock().unwrap().len(), 3);
    }

    #[test]
    fn bad_answers_and_persistent_errors_are_errors_for_the_case() {
        let m = serve(|_, _, _| (200, completion("the job should be retried, I think")));
        let c = HttpClassifier::new(&m.url, &opts()).unwrap();
        assert!(matches!(
            c.classify(&case("x")),
            Err(ClassifyError::BadAnswer(_))
        ));

        let m = serve(|_, _, _| (200, "<html>not json</html>".into()));
        let c = HttpClassifier::new(&m.url, &opts()).unwrap();
        assert!(matches!(
            c.classify(&case("x")),
            Err(ClassifyError::BadAnswer(_))
        ));

        let m = serve(|_, _, _| {
            (
                200,
                serde_json::json!({"choices": [{"message": {"role": "assistant", "content": null, "refusal": "I cannot help with that"}}]}).to_string(),
            )
        });
        let c = HttpClassifier::new(&m.url, &opts()).unwrap();
        assert!(matches!(
            c.classify(&case("x")),
            Err(ClassifyError::Refused(_))
        ));

        let m = serve(|_, _, _| (500, "boom".into()));
        let c = HttpClassifier::new(&m.url, &opts()).unwrap();
        let e = c.classify(&case("x")).unwrap_err();
        assert!(
            e.to_string().contains("HTTP 500") && e.to_string().contains("4 attempts"),
            "{e}"
        );
        assert_eq!(m.requests.lock().unwrap().len(), 4, "1 try + 3 retries");

        // A client error is not retried: it will not get better.
        let m = serve(|_, _, _| (401, r#"{"error": "bad key"}"#.into()));
        let c = HttpClassifier::new(&m.url, &opts()).unwrap();
        let e = c.classify(&case("x")).unwrap_err();
        assert!(e.to_string().contains("HTTP 401"), "{e}");
        assert_eq!(m.requests.lock().unwrap().len(), 1);
    }

    #[test]
    fn urls_are_checked() {
        assert!(HttpClassifier::new("localhost:8000", &opts()).is_err());
        let c = HttpClassifier::new("http://h:1/v1/chat/completions/", &opts()).unwrap();
        assert_eq!(c.name(), "http:http://h:1/v1/chat/completions");
    }
}
