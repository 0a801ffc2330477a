//! `sightline.toml`: retention tiers, the ordered rules that place spans in them, and content
//! settings. The README's example is also the default when no file is given
//! (`default_config.toml`, compiled in).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::cli::DurationArg;

/// The configuration used when `--config` is not given.
pub const DEFAULT_CONFIG: &str = include_str!("default_config.toml");

/// A parsed and checked configuration file.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// Tiers and the tier of rows no rule places.
    pub retention: engine::RetentionPolicy,
    /// Ordered rules, compiled.
    pub rules: query::RuleSet,
    /// The rules as written (for `check-config` and logs).
    pub rule_list: Vec<query::RetentionRule>,
    /// How long captured content is kept (`[content] keep`), unless its span's tier has a
    /// `content_keep` of its own.
    pub content_keep: Duration,
    /// `content_keep` of the tiers that set one (tier name -> keep).
    pub tier_content_keep: BTreeMap<String, Duration>,
    /// Content settings as written, for the content pipeline.
    pub content: ContentSection,
    /// The API tokens (`[[auth.tokens]]`); none: everything allowed, loopback only.
    pub tokens: crate::auth::Tokens,
    /// `[tls]`: the certificate and key every listener serves (relative paths are taken from
    /// the configuration file's directory).
    pub tls: Option<crate::tls::TlsFiles>,
    /// `[lake]`: where sealed data is shipped (none: no lake).
    pub lake: Option<LakeSettings>,
}

/// `[lake]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeSettings {
    /// The lake: a directory, `file:///dir`, `s3://bucket/prefix`, `gs://…` or `az://…`.
    pub url: String,
    /// This instance's name in the lake (`node=` partition); none: a name kept in the data
    /// directory.
    pub node: Option<String>,
    /// How often the server ships what was sealed since.
    pub interval: Duration,
    /// Whether captured content (prompts, completions, tool arguments) goes to the lake too,
    /// within its keep; off by default: the lake has no scopes, whoever reads it reads it all.
    pub content: bool,
    /// `[lake.options]`: object store settings (`aws_endpoint`, `aws_region`, ...), over the
    /// `AWS_*`, `GOOGLE_*` and `AZURE_*` environment variables.
    pub options: BTreeMap<String, String>,
}

/// `[lake]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LakeSection {
    url: String,
    #[serde(default)]
    node: Option<String>,
    #[serde(default = "default_lake_interval")]
    interval: String,
    #[serde(default)]
    content: bool,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

fn default_lake_interval() -> String {
    "30s".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// Left out: the default configuration's tiers and rules.
    #[serde(default = "default_retention")]
    retention: RetentionSection,
    #[serde(default)]
    content: ContentSection,
    #[serde(default)]
    auth: AuthSection,
    #[serde(default)]
    tls: Option<TlsSection>,
    #[serde(default)]
    lake: Option<LakeSection>,
}

/// `[tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    /// PEM certificate chain, leaf first.
    cert: std::path::PathBuf,
    /// PEM private key.
    key: std::path::PathBuf,
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    #[serde(default)]
    tokens: Vec<crate::auth::TokenSection>,
}

/// The `[retention]` section of [`DEFAULT_CONFIG`].
fn default_retention() -> RetentionSection {
    toml::from_str::<Raw>(DEFAULT_CONFIG)
        .map(|raw| raw.retention)
        .unwrap_or_else(|_| unreachable!("the default configuration parses (tested)"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSection {
    default_tier: String,
    tiers: Vec<TierSection>,
    #[serde(default)]
    rules: Vec<RuleSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierSection {
    name: String,
    keep: String,
    /// How long content of this tier's spans is kept (default: `[content] keep`).
    #[serde(default)]
    content_keep: Option<String>,
    /// What the age counts from: `arrival` (the later of end time and arrival, the
    /// default) or `span_time`.
    #[serde(default)]
    age_from: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSection {
    name: String,
    tier: String,
    when: String,
}

/// `[content]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentSection {
    /// How long content is kept (`7d`).
    #[serde(default = "default_content_keep")]
    pub keep: String,
    /// Store content at all (`false`: only digests are kept).
    #[serde(default = "default_capture")]
    pub capture: bool,
    /// Redaction rules, applied before anything is written. Left out (or with no
    /// `[content]` section at all), e-mail addresses are redacted on every key, as in the
    /// default configuration; `redaction = []` turns redaction off.
    #[serde(default = "default_redaction")]
    pub redaction: Vec<RedactionSection>,
}

impl Default for ContentSection {
    fn default() -> Self {
        ContentSection {
            keep: default_content_keep(),
            capture: true,
            redaction: default_redaction(),
        }
    }
}

/// Redaction when a configuration names none: e-mail addresses, on every key.
fn default_redaction() -> Vec<RedactionSection> {
    vec![RedactionSection {
        name: "email".to_owned(),
        keys: vec!["*".to_owned()],
        detectors: vec!["email".to_owned()],
        regexes: Vec::new(),
        drop: false,
    }]
}

/// `[[content.redaction]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionSection {
    /// Rule name, written into redacted values: `[REDACTED:<name>]`.
    pub name: String,
    /// Attribute key patterns (`*` matches any run of characters).
    pub keys: Vec<String>,
    /// Built-in detectors: `email`, `api_key`, `bearer`, `credit_card`.
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Custom regular expressions.
    #[serde(default)]
    pub regexes: Vec<String>,
    /// Drop matching attributes entirely.
    #[serde(default)]
    pub drop: bool,
}

fn default_content_keep() -> String {
    "7d".to_owned()
}

fn default_capture() -> bool {
    true
}

/// A configuration error, naming what is wrong and where.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

fn duration(what: &str, text: &str) -> Result<Duration, ConfigError> {
    text.parse::<DurationArg>()
        .map(|duration| duration.0)
        .map_err(|error| ConfigError(format!("{what}: {error}")))
}

impl FileConfig {
    /// The built-in default (the README's example).
    pub fn default_config() -> Result<FileConfig, ConfigError> {
        FileConfig::parse(DEFAULT_CONFIG, "the built-in default configuration")
    }

    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError(format!("cannot read {}: {error}", path.display())))?;
        let mut config = FileConfig::parse(&text, &path.display().to_string())?;
        if let (Some(tls), Some(dir)) = (&mut config.tls, path.parent()) {
            tls.cert = dir.join(&tls.cert);
            tls.key = dir.join(&tls.key);
        }
        Ok(config)
    }

    /// Parses and checks configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<FileConfig, ConfigError> {
        let raw: Raw =
            toml::from_str(text).map_err(|error| ConfigError(format!("{origin}: {error}")))?;
        let mut tiers = Vec::with_capacity(raw.retention.tiers.len());
        let mut tier_content_keep = BTreeMap::new();
        for tier in &raw.retention.tiers {
            if let Some(keep) = &tier.content_keep {
                let keep = duration(
                    &format!("{origin}: content_keep of tier {:?}", tier.name),
                    keep,
                )?;
                tier_content_keep.insert(tier.name.clone(), keep);
            }
            let age_from = match tier.age_from.as_deref() {
                None => engine::AgeFrom::default(),
                Some(text) => engine::AgeFrom::parse(text).ok_or_else(|| {
                    ConfigError(format!(
                        "{origin}: age_from of tier {:?} is {text:?}; expected \"arrival\" or \"span_time\"",
                        tier.name
                    ))
                })?,
            };
            tiers.push(engine::Tier {
                name: tier.name.clone(),
                keep: duration(
                    &format!("{origin}: keep of tier {:?}", tier.name),
                    &tier.keep,
                )?,
                age_from,
            });
        }
        let retention = engine::RetentionPolicy::new(tiers, &raw.retention.default_tier)
            .map_err(|error| ConfigError(format!("{origin}: [retention]: {error}")))?;
        let mut rule_list = Vec::with_capacity(raw.retention.rules.len());
        for (index, rule) in raw.retention.rules.iter().enumerate() {
            if retention.tier(&rule.tier).is_none() {
                return Err(ConfigError(format!(
                    "{origin}: retention rule {:?}: tier {:?} is not defined in [[retention.tiers]]",
                    rule.name, rule.tier
                )));
            }
            if raw.retention.rules[..index]
                .iter()
                .any(|other| other.name == rule.name)
            {
                return Err(ConfigError(format!(
                    "{origin}: retention rule {:?} is defined twice",
                    rule.name
                )));
            }
            rule_list.push(query::RetentionRule {
                name: rule.name.clone(),
                tier: rule.tier.clone(),
                when: rule.when.clone(),
            });
        }
        let rules = query::RuleSet::compile(&rule_list)
            .map_err(|error| ConfigError(format!("{origin}: {error}")))?;
        let content_keep = duration(&format!("{origin}: [content] keep"), &raw.content.keep)?;
        let lake = match &raw.lake {
            None => None,
            Some(lake) => {
                if lake.url.trim().is_empty() {
                    return Err(ConfigError(format!("{origin}: [lake] url is empty")));
                }
                if let Some(node) = &lake.node
                    && !crate::lake_shipper::valid_node(node)
                {
                    return Err(ConfigError(format!(
                        "{origin}: [lake] node {node:?} is not valid: use 1 to 64 letters, digits, '-', '_' or '.'"
                    )));
                }
                crate::lake_shipper::check_lake_url(&lake.url, &lake.options)
                    .map_err(|message| ConfigError(format!("{origin}: {message}")))?;
                let interval = duration(&format!("{origin}: [lake] interval"), &lake.interval)?;
                if interval.is_zero() {
                    return Err(ConfigError(format!(
                        "{origin}: [lake] interval must be more than zero"
                    )));
                }
                Some(LakeSettings {
                    url: lake.url.clone(),
                    node: lake.node.clone(),
                    interval,
                    content: lake.content,
                    options: lake.options.clone(),
                })
            }
        };
        Ok(FileConfig {
            retention,
            rules,
            rule_list,
            content_keep,
            tier_content_keep,
            content: raw.content,
            tokens: crate::auth::Tokens::from_sections(&raw.auth.tokens)
                .map_err(|error| ConfigError(format!("{origin}: [auth] {error}")))?,
            tls: raw.tls.map(|tls| crate::tls::TlsFiles {
                cert: tls.cert,
                key: tls.key,
            }),
            lake,
        })
    }

    /// What a content retention pass at `now_unix_nanos` removes (see
    /// [`content_expiry_request`]).
    pub fn content_expiry_request(&self, now_unix_nanos: u64) -> engine::ContentExpiryRequest {
        content_expiry_request(
            &self.retention,
            self.content_keep,
            &self.tier_content_keep,
            now_unix_nanos,
        )
    }

    /// A human summary, for `check-config`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for tier in self.retention.tiers().iter().rev() {
            let default = if tier.name == self.retention.default_tier() {
                " (default)"
            } else {
                ""
            };
            let content = match self.tier_content_keep.get(&tier.name) {
                Some(keep) => format!(", content keep {}", DurationArg(*keep)),
                None => String::new(),
            };
            let age_from = match tier.age_from {
                engine::AgeFrom::Arrival => String::new(),
                other => format!(", age from {}", other.name()),
            };
            out.push_str(&format!(
                "tier {:<12} keep {}{content}{age_from}{default}\n",
                tier.name,
                DurationArg(tier.keep)
            ));
        }
        for (index, rule) in self.rule_list.iter().enumerate() {
            out.push_str(&format!(
                "rule {}: {:?} -> {} when {}\n",
                index + 1,
                rule.name,
                rule.tier,
                rule.when
            ));
        }
        out.push_str(&format!(
            "content keep {}, capture {}, {} redaction rule(s)\n",
            DurationArg(self.content_keep),
            if self.content.capture { "on" } else { "off" },
            self.content.redaction.len()
        ));
        out.push_str(&self.tokens.summary());
        match &self.tls {
            Some(tls) => out.push_str(&format!(
                "tls: certificate {}, key {}\n",
                tls.cert.display(),
                tls.key.display()
            )),
            None => out.push_str("tls: none (listeners stay on loopback unless --insecure)\n"),
        }
        match &self.lake {
            Some(lake) => out.push_str(&format!(
                "lake: {} as node {}, shipped every {}, content {}\n",
                lake.url,
                lake.node
                    .as_deref()
                    .unwrap_or("(kept in the data directory)"),
                DurationArg(lake.interval),
                if lake.content { "included" } else { "left out" }
            )),
            None => out.push_str("lake: none\n"),
        }
        out
    }
}

/// What a content retention pass at `now_unix_nanos` removes: content whose newest reference
/// is older than its tier's `content_keep`, or `content_keep` for tiers without one.
/// References of default-tier spans carry no tier name, so they get the default tier's
/// `content_keep` when it has one.
pub fn content_expiry_request(
    retention: &engine::RetentionPolicy,
    content_keep: Duration,
    tier_content_keep: &BTreeMap<String, Duration>,
    now_unix_nanos: u64,
) -> engine::ContentExpiryRequest {
    let cutoff = |keep: &Duration| {
        now_unix_nanos.saturating_sub(u64::try_from(keep.as_nanos()).unwrap_or(u64::MAX))
    };
    let default_keep = tier_content_keep
        .get(retention.default_tier())
        .unwrap_or(&content_keep);
    let mut request = engine::ContentExpiryRequest::new(cutoff(default_keep));
    for (tier, keep) in tier_content_keep {
        request = request.with_tier(tier.clone(), cutoff(keep));
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_paths_are_taken_from_the_configuration_files_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sightline.toml");
        std::fs::write(
            &path,
            "[tls]\ncert = \"certs/server.pem\"\nkey = \"/etc/keys/server.key\"\n",
        )
        .unwrap();
        let tls = FileConfig::load(&path).unwrap().tls.unwrap();
        assert_eq!(tls.cert, dir.path().join("certs/server.pem"));
        assert_eq!(tls.key, std::path::PathBuf::from("/etc/keys/server.key"));
        let error = FileConfig::parse("[tls]\ncert = \"a.pem\"\n", "f.toml").unwrap_err();
        assert!(error.to_string().contains("missing field `key`"), "{error}");
        assert!(FileConfig::default_config().unwrap().tls.is_none());
    }

    #[test]
    fn the_default_is_the_readme_example_and_is_valid() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(DEFAULT_CONFIG.trim()),
            "README must show the default configuration verbatim"
        );
        let config = FileConfig::default_config().unwrap();
        assert_eq!(config.retention.default_tier(), "standard");
        assert_eq!(
            config.retention.keep("decision"),
            Duration::from_secs(400 * 86_400)
        );
        assert_eq!(config.rule_list.len(), 3);
        assert_eq!(config.content_keep, Duration::from_secs(7 * 86_400));
        assert!(config.tier_content_keep.is_empty());
    }

    #[test]
    fn a_configuration_without_retention_takes_the_default_tiers_and_rules() {
        let config = FileConfig::parse("[content]\ncapture = false\n", "test.toml").unwrap();
        let default = FileConfig::default_config().unwrap();
        assert_eq!(config.retention, default.retention);
        assert_eq!(config.rule_list.len(), default.rule_list.len());
        assert!(!config.content.capture);
    }

    #[test]
    fn a_configuration_without_redaction_rules_redacts_e_mail_addresses() {
        // No `[content]` section, and one without `redaction`: the default e-mail rule.
        for text in [
            TIERS.to_owned(),
            format!("{TIERS}\n[content]\nkeep = \"30d\"\n"),
        ] {
            let config = FileConfig::parse(&text, "test.toml").unwrap();
            let rules = &config.content.redaction;
            assert_eq!(rules.len(), 1, "{text}");
            assert_eq!(rules[0].detectors, vec!["email".to_owned()]);
        }
        // Turned off on purpose.
        let text = format!("{TIERS}\n[content]\nredaction = []\n");
        let config = FileConfig::parse(&text, "test.toml").unwrap();
        assert!(config.content.redaction.is_empty());
    }

    #[test]
    fn a_tier_may_count_its_age_from_span_time() {
        let config = FileConfig::parse(TIERS, "test.toml").unwrap();
        assert_eq!(
            config.retention.age_from("standard"),
            engine::AgeFrom::Arrival
        );
        let text = TIERS.replace("keep = \"14d\"", "keep = \"14d\"\nage_from = \"span_time\"");
        let config = FileConfig::parse(&text, "test.toml").unwrap();
        assert_eq!(
            config.retention.age_from("standard"),
            engine::AgeFrom::SpanTime
        );
        assert_eq!(
            config.retention.age_from("decision"),
            engine::AgeFrom::Arrival
        );
        let summary = config.summary();
        assert!(
            summary.contains("tier standard     keep 14d, age from span_time (default)\n"),
            "{summary}"
        );
        let bad = TIERS.replace("keep = \"14d\"", "keep = \"14d\"\nage_from = \"start\"");
        let message = error(&bad);
        assert!(
            message.contains("age_from of tier \"standard\" is \"start\"")
                && message.contains("\"span_time\""),
            "{message}"
        );
    }

    #[test]
    fn tiers_may_keep_their_content_longer() {
        let text = TIERS.replace("keep = \"400d\"", "keep = \"400d\"\ncontent_keep = \"30d\"");
        let config = FileConfig::parse(&text, "test.toml").unwrap();
        assert_eq!(
            config.tier_content_keep,
            BTreeMap::from([("decision".to_owned(), Duration::from_secs(30 * 86_400))])
        );
        assert_eq!(config.content_keep, Duration::from_secs(7 * 86_400));
        let summary = config.summary();
        assert!(
            summary.contains("tier decision     keep 400d, content keep 30d\n"),
            "{summary}"
        );
        assert!(
            summary.contains("tier standard     keep 14d (default)\n"),
            "{summary}"
        );
        let bad = TIERS.replace("keep = \"14d\"", "keep = \"14d\"\ncontent_keep = \"later\"");
        let message = error(&bad);
        assert!(
            message.contains("content_keep of tier \"standard\""),
            "{message}"
        );
        let unknown = TIERS.replace("keep = \"14d\"", "keep = \"14d\"\ncontent_kept = \"3d\"");
        assert!(error(&unknown).contains("content_kept"));
    }

    fn error(text: &str) -> String {
        FileConfig::parse(text, "test.toml")
            .unwrap_err()
            .to_string()
    }

    const TIERS: &str = r#"
[retention]
default_tier = "standard"
[[retention.tiers]]
name = "standard"
keep = "14d"
[[retention.tiers]]
name = "decision"
keep = "400d"
"#;

    #[test]
    fn bad_rules_are_named_with_their_problem() {
        let bad_sql = format!(
            "{TIERS}[[retention.rules]]\nname = \"broken\"\ntier = \"decision\"\nwhen = \"tool_risk IN (\"\n"
        );
        let message = error(&bad_sql);
        assert!(message.contains("retention rule \"broken\""), "{message}");
        let unknown_column = format!(
            "{TIERS}[[retention.rules]]\nname = \"typo\"\ntier = \"decision\"\nwhen = \"tool_rsk = 'write'\"\n"
        );
        let message = error(&unknown_column);
        assert!(
            message.contains("\"typo\"") && message.contains("tool_rsk"),
            "{message}"
        );
        let not_boolean = format!(
            "{TIERS}[[retention.rules]]\nname = \"count\"\ntier = \"decision\"\nwhen = \"input_tokens + 1\"\n"
        );
        let message = error(&not_boolean);
        assert!(message.contains("not a boolean"), "{message}");
        let unknown_tier =
            format!("{TIERS}[[retention.rules]]\nname = \"r\"\ntier = \"gold\"\nwhen = \"true\"\n");
        assert!(error(&unknown_tier).contains("tier \"gold\" is not defined"));
        assert!(error("[retention]\ndefault_tier = \"x\"\ntiers = []\n").contains("at least one"));
        assert!(error(&format!("{TIERS}[content]\nkeep = \"soon\"\n")).contains("[content] keep"));
        assert!(
            error("[retention]\ndefault_tier = \"a\"\nbogus = 1\ntiers = []").contains("bogus")
        );
    }
}
