//! [`WeatherTool`]: seed 004's `get_weather`, on OpenWeather's current weather API.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::Tool;
use crate::{Error, Result};

/// How long one weather lookup may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The current weather of a city, from OpenWeather
/// (`GET {base}/data/2.5/weather?q=CITY&appid=KEY&units=metric`).
///
/// The model calls it as `get_weather` with `{"city": "Paris"}` (or `"Paris,FR"`) and is
/// told a compact JSON summary: city, country, description, temperature and feels-like
/// (°C), humidity (%), wind speed (m/s). An unknown city or a refused key is an error,
/// which [`ToolLoopLayer`](super::ToolLoopLayer) passes to the model as `{"error": …}`.
///
/// ```no_run
/// # fn demo() -> chatstream_core::Result<()> {
/// use chatstream_core::backend::WeatherTool;
/// // None when OPENWEATHER_API_KEY is unset: the tool is then not offered at all.
/// let weather = WeatherTool::from_env()?;
/// # let _ = weather; Ok(()) }
/// ```
#[derive(Clone)]
pub struct WeatherTool {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
}

impl fmt::Debug for WeatherTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeatherTool")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl WeatherTool {
    /// OpenWeather's API.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.openweathermap.org";

    /// A tool using `api_key` against [`WeatherTool::DEFAULT_BASE_URL`].
    pub fn new(api_key: impl Into<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| Error::unavailable("weather", e))?;
        Ok(Self {
            http,
            base_url: Self::DEFAULT_BASE_URL.to_owned(),
            api_key: api_key.into(),
        })
    }

    /// Sends requests to `base_url` instead (a proxy, or a fake in tests).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into().trim_end_matches('/').to_owned();
        self
    }

    /// The tool when `OPENWEATHER_API_KEY` is set (not empty), with the base URL from
    /// `OPENWEATHER_URL` when set; `None` without a key.
    pub fn from_env() -> Result<Option<Self>> {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let Some(key) = get("OPENWEATHER_API_KEY") else {
            return Ok(None);
        };
        let tool = Self::new(key.trim())?;
        Ok(Some(match get("OPENWEATHER_URL") {
            Some(base) => tool.with_base_url(base.trim()),
            None => tool,
        }))
    }

    fn url(&self, city: &str) -> Result<reqwest::Url> {
        let mut url = reqwest::Url::parse(&format!("{}/data/2.5/weather", self.base_url))
            .map_err(|e| Error::invalid("weather base URL", e))?;
        url.query_pairs_mut()
            .append_pair("q", city)
            .append_pair("appid", &self.api_key)
            .append_pair("units", "metric");
        Ok(url)
    }
}

#[async_trait]
impl Tool for WeatherTool {
    fn name(&self) -> &str {
        "get_weather"
    }

    fn description(&self) -> &str {
        "Get the current weather in a city: conditions, temperature in °C, humidity and wind."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "city": {
                    "type": "string",
                    "description": "The city, optionally with a country code, e.g. \"Paris\" or \"Paris,FR\"."
                }
            },
            "required": ["city"]
        })
    }

    async fn call(&self, arguments: &str) -> Result<String> {
        let args: Value = serde_json::from_str(arguments)
            .map_err(|e| Error::invalid("get_weather arguments", e))?;
        let city = args
            .get("city")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::invalid("get_weather arguments", "no \"city\" given"))?;
        let response = self
            .http
            .get(self.url(city)?)
            .send()
            .await
            .map_err(|e| Error::unavailable("weather", e.without_url()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| Error::unavailable("weather", e.without_url()))?;
        let data: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = data
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("request failed");
            return Err(Error::Backend {
                status: Some(status.as_u16()),
                message: format!("weather for {city:?}: {message}"),
            });
        }
        if !data.is_object() {
            return Err(Error::decode("weather answer", "not a JSON object"));
        }
        let summary = json!({
            "city": data.get("name").cloned().unwrap_or_else(|| json!(city)),
            "country": data.pointer("/sys/country"),
            "description": data.pointer("/weather/0/description"),
            "temperature_c": data.pointer("/main/temp"),
            "feels_like_c": data.pointer("/main/feels_like"),
            "humidity_pct": data.pointer("/main/humidity"),
            "wind_speed_ms": data.pointer("/wind/speed"),
        });
        Ok(summary.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A one-route fake OpenWeather: answers every request with `status` and `body`,
    /// remembering the request lines.
    async fn fake(status: u16, body: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                log.lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or("").to_owned());
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        (format!("http://{addr}"), seen)
    }

    const PARIS: &str = r#"{"coord":{"lon":2.35,"lat":48.85},"weather":[{"id":800,"main":"Clear","description":"clear sky","icon":"01d"}],"main":{"temp":21.5,"feels_like":20.9,"temp_min":19.8,"temp_max":23.1,"pressure":1016,"humidity":48},"wind":{"speed":3.6,"deg":250},"sys":{"country":"FR"},"name":"Paris","cod":200}"#;

    #[tokio::test]
    async fn asks_openweather_for_the_city_in_metric_units_and_summarizes() {
        let (base, seen) = fake(200, PARIS).await;
        let tool = WeatherTool::new("k-1")
            .unwrap()
            .with_base_url(format!("{base}/"));
        let out = tool.call(r#"{"city":"Paris, FR"}"#).await.unwrap();
        assert_eq!(
            seen.lock().unwrap()[0],
            "GET /data/2.5/weather?q=Paris%2C+FR&appid=k-1&units=metric HTTP/1.1"
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            json!({"city": "Paris", "country": "FR", "description": "clear sky",
                "temperature_c": 21.5, "feels_like_c": 20.9, "humidity_pct": 48,
                "wind_speed_ms": 3.6})
        );
        assert!(!format!("{tool:?}").contains("k-1"));
    }

    #[tokio::test]
    async fn unknown_cities_and_bad_arguments_are_errors() {
        let (base, seen) = fake(404, r#"{"cod":"404","message":"city not found"}"#).await;
        let tool = WeatherTool::new("k").unwrap().with_base_url(base);
        match tool.call(r#"{"city":"Atlantis"}"#).await {
            Err(Error::Backend {
                status: Some(404),
                message,
            }) => assert!(message.contains("city not found"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            tool.call(r#"{"town":"x"}"#).await,
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            tool.call("nope").await,
            Err(Error::Invalid { .. })
        ));
        assert_eq!(seen.lock().unwrap().len(), 1, "bad arguments send nothing");
    }
}
