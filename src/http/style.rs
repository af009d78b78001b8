//! [`HeaderStyle`]: which rate-limit headers a writer emits.

use std::fmt;
use std::str::FromStr;

/// A version of the IETF RateLimit header fields draft (draft-ietf-httpapi-ratelimit-headers).
///
/// The draft still changes between versions, so the version is part of the style: a server
/// keeps the format its clients parse until it opts into a newer one. Non-exhaustive: later
/// drafts (and the RFC) are added as new variants, without breaking code that names this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IetfDraft {
    /// [draft-ietf-httpapi-ratelimit-headers-10](https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/10/):
    /// a `RateLimit-Policy` list of named policies with `q` (quota) and `w` (window, seconds),
    /// and a `RateLimit` list with `r` (remaining) and `t` (seconds to reset) for each, both
    /// Structured Field Values (RFC 9651), with an optional `pk` (partition key) on each item.
    Draft10,
}

impl IetfDraft {
    /// The version's short name, as [`HeaderStyle`]'s text form writes it: `ietf-10`.
    pub const fn name(self) -> &'static str {
        match self {
            IetfDraft::Draft10 => "ietf-10",
        }
    }
}

/// Which rate-limit headers to write: any combination of the X-RateLimit headers, the IETF
/// `RateLimit` and `RateLimit-Policy` fields (of a given draft), and GitHub's
/// `x-ratelimit-used` and `x-ratelimit-resource`. `Retry-After` is written on every denial,
/// whatever the style. The default is [`HeaderStyle::x_ratelimit`], the seed contract.
///
/// Start from one of [`x_ratelimit`](Self::x_ratelimit), [`ietf`](Self::ietf) or
/// [`github_extras`](Self::github_extras) and add the others with the `with_` methods; the
/// text form (`"xratelimit"`, `"ietf"`, `"both"`, `"xratelimit+github"`, ...) parses with
/// [`FromStr`], e.g. from an environment variable.
///
/// # Example
///
/// ```
/// use ratewindow::http::{HeaderStyle, IetfDraft};
///
/// let both = HeaderStyle::x_ratelimit().with_ietf(IetfDraft::Draft10);
/// assert!(both.has_x_ratelimit());
/// assert_eq!(both.ietf_draft(), Some(IetfDraft::Draft10));
/// assert!(!both.has_github_extras());
///
/// assert_eq!("both".parse::<HeaderStyle>()?, both);
/// assert_eq!(both.to_string(), "xratelimit+ietf-10");
/// assert_eq!(HeaderStyle::default(), HeaderStyle::x_ratelimit());
/// assert!("legacy".parse::<HeaderStyle>().is_err());
/// # Ok::<(), ratewindow::http::ParseHeaderStyleError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderStyle {
    x_ratelimit: bool,
    ietf: Option<IetfDraft>,
    github_extras: bool,
}

impl HeaderStyle {
    /// `x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset` (unix epoch
    /// seconds) for the decision's binding quota.
    pub const fn x_ratelimit() -> HeaderStyle {
        HeaderStyle {
            x_ratelimit: true,
            ietf: None,
            github_extras: false,
        }
    }

    /// `ratelimit-policy` and `ratelimit` as the given draft defines them, for every quota.
    pub const fn ietf(draft: IetfDraft) -> HeaderStyle {
        HeaderStyle {
            x_ratelimit: false,
            ietf: Some(draft),
            github_extras: false,
        }
    }

    /// GitHub's `x-ratelimit-used` (units used in the binding quota's window) and
    /// `x-ratelimit-resource` (the binding quota's [`PolicyName`](super::PolicyName)).
    pub const fn github_extras() -> HeaderStyle {
        HeaderStyle {
            x_ratelimit: false,
            ietf: None,
            github_extras: true,
        }
    }

    /// This style plus the X-RateLimit headers.
    pub const fn with_x_ratelimit(mut self) -> HeaderStyle {
        self.x_ratelimit = true;
        self
    }

    /// This style plus the IETF fields of `draft` (replacing any other draft).
    pub const fn with_ietf(mut self, draft: IetfDraft) -> HeaderStyle {
        self.ietf = Some(draft);
        self
    }

    /// This style plus GitHub's `x-ratelimit-used` and `x-ratelimit-resource`.
    pub const fn with_github_extras(mut self) -> HeaderStyle {
        self.github_extras = true;
        self
    }

    /// Whether the X-RateLimit headers are written.
    pub const fn has_x_ratelimit(&self) -> bool {
        self.x_ratelimit
    }

    /// Which IETF draft's fields are written, if any.
    pub const fn ietf_draft(&self) -> Option<IetfDraft> {
        self.ietf
    }

    /// Whether GitHub's `x-ratelimit-used` and `x-ratelimit-resource` are written.
    pub const fn has_github_extras(&self) -> bool {
        self.github_extras
    }
}

impl Default for HeaderStyle {
    fn default() -> Self {
        HeaderStyle::x_ratelimit()
    }
}

/// Parses styles joined by `+` or `,`, case-insensitively: `xratelimit` (or `x-ratelimit`),
/// `ietf` (the newest draft this release implements, now `ietf-10`), `ietf-10`, `github`, and
/// `both` for `xratelimit+ietf`. Surrounding whitespace is ignored.
impl FromStr for HeaderStyle {
    type Err = ParseHeaderStyleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut style = HeaderStyle {
            x_ratelimit: false,
            ietf: None,
            github_extras: false,
        };
        for token in text.split(['+', ',']) {
            let token = token.trim();
            let is = |name: &str| token.eq_ignore_ascii_case(name);
            if is("xratelimit") || is("x-ratelimit") {
                style.x_ratelimit = true;
            } else if is("ietf") || is("ietf-10") {
                style.ietf = Some(IetfDraft::Draft10);
            } else if is("github") {
                style.github_extras = true;
            } else if is("both") {
                style.x_ratelimit = true;
                style.ietf = Some(IetfDraft::Draft10);
            } else {
                return Err(ParseHeaderStyleError {
                    token: token.to_owned(),
                });
            }
        }
        Ok(style)
    }
}

/// The text form [`FromStr`] reads: the enabled styles joined by `+`, e.g.
/// `xratelimit+ietf-10+github`.
impl fmt::Display for HeaderStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            self.x_ratelimit.then_some("xratelimit"),
            self.ietf.map(IetfDraft::name),
            self.github_extras.then_some("github"),
        ];
        let mut first = true;
        for part in parts.into_iter().flatten() {
            if !first {
                f.write_str("+")?;
            }
            f.write_str(part)?;
            first = false;
        }
        Ok(())
    }
}

/// A header style's text form named an unknown style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseHeaderStyleError {
    token: String,
}

impl fmt::Display for ParseHeaderStyleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown header style {:?}: expected xratelimit, ietf, ietf-10, github or both, \
             joined by '+'",
            self.token
        )
    }
}

impl std::error::Error for ParseHeaderStyleError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let x = HeaderStyle::x_ratelimit();
        let ietf = HeaderStyle::ietf(IetfDraft::Draft10);
        let github = HeaderStyle::github_extras();
        let all = x.with_ietf(IetfDraft::Draft10).with_github_extras();
        for (text, style) in [
            ("xratelimit", x),
            ("X-RateLimit", x),
            ("ietf", ietf),
            ("ietf-10", ietf),
            ("github", github),
            ("both", x.with_ietf(IetfDraft::Draft10)),
            ("xratelimit+github", x.with_github_extras()),
            (" ietf , github ", ietf.with_github_extras()),
            ("both+github", all),
        ] {
            assert_eq!(text.parse::<HeaderStyle>(), Ok(style), "{text}");
            assert_eq!(style.to_string().parse::<HeaderStyle>(), Ok(style));
        }
        assert_eq!(all.to_string(), "xratelimit+ietf-10+github");
        assert_eq!(
            github.with_x_ratelimit(),
            x.with_github_extras(),
            "order of the builders does not matter"
        );
    }

    #[test]
    fn unknown_styles_are_errors() {
        for bad in ["", "ietf-9", "xratelimit+", "legacy"] {
            assert!(bad.parse::<HeaderStyle>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "ietf+draft".parse::<HeaderStyle>().unwrap_err().to_string(),
            "unknown header style \"draft\": expected xratelimit, ietf, ietf-10, github or \
             both, joined by '+'"
        );
    }
}
