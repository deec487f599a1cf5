//! A file's name: the user's key, validated once at the edge.

use std::fmt;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick as is_nfc_quick_check};

/// An S3 key may have 1024 bytes, and its name is `bucket/key` with a bucket of up to 63.
pub const MAX_NAME_BYTES: usize = 1024 + 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is longer than {MAX_NAME_BYTES} bytes")]
    TooLong,
    #[error("name contains a control character")]
    ControlCharacter,
    #[error(
        "name contains an invisible or text-direction character (U+{0:04X}), which would make it look like another name"
    )]
    Invisible(u32),
    #[error("name contains a \\; use / to separate folders")]
    Backslash,
    #[error("name contains a \".\" or \"..\" segment, which a URL would resolve to another name")]
    DotSegment,
}

/// A valid name: 1..=1088 bytes of UTF-8 in Unicode normal form C, without control, invisible
/// or text-direction characters, backslashes, or `.`/`..` segments.
///
/// Each rule keeps what a user sees and what the node acts on the same name: browsers and URL
/// parsers resolve dot segments and turn `\` into `/`, so `a/../victim` would be acted on as
/// `victim`; right-to-left overrides and zero-width characters make one name look like another;
/// and the two normal forms of `é` look identical, so both are stored as the composed form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(String);

impl FileName {
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let mut name = name.into();
        if !is_nfc_quick(&name) {
            name = name.nfc().collect();
        }
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(NameError::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        if let Some(c) = invisible(&name) {
            return Err(NameError::Invisible(c as u32));
        }
        if name.contains('\\') {
            return Err(NameError::Backslash);
        }
        if name.split('/').any(|segment| segment == "." || segment == "..") {
            return Err(NameError::DotSegment);
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last path segment, for `Content-Disposition`.
    pub fn base(&self) -> &str {
        self.0.rsplit('/').find(|s| !s.is_empty()).unwrap_or(&self.0)
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

fn is_nfc_quick(name: &str) -> bool {
    name.is_ascii() || matches!(is_nfc_quick_check(name.chars()), IsNormalized::Yes)
}

/// The first character that shows nothing or reorders text around it, if any.
///
/// Zero-width joiners (U+200C, U+200D) are part of emoji sequences and of Persian and Indic
/// words, so they are allowed between two non-ASCII letters or symbols; between ASCII letters
/// they only serve to make `pay\u{200d}pal` look like `paypal`.
fn invisible(name: &str) -> Option<char> {
    let chars: Vec<char> = name.chars().collect();
    chars.iter().enumerate().find_map(|(i, &c)| {
        let hidden = match c {
            '\u{200c}' | '\u{200d}' => {
                let visible_neighbour =
                    |n: Option<&char>| n.is_some_and(|n| !n.is_ascii() && !n.is_whitespace());
                !(i > 0 && visible_neighbour(chars.get(i - 1)) && visible_neighbour(chars.get(i + 1)))
            }
            // Soft hyphen, Arabic letter mark, Mongolian vowel separator, zero-width space,
            // LTR/RTL marks, bidi embeddings and overrides, word joiner and invisible operators,
            // bidi isolates, the deprecated format characters, byte-order mark, Hangul fillers,
            // interlinear annotation.
            '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}' | '\u{200e}' | '\u{200f}' => true,
            '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}' => true,
            '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}' | '\u{fff9}'..='\u{fffb}' => true,
            _ => false,
        };
        hidden.then_some(c)
    })
}

/// Content type to store: what the client said, else a guess from the name.
pub fn content_type_for(given: Option<&str>, name: &FileName) -> String {
    match given.map(str::trim) {
        Some(t) if !t.is_empty() && t != "application/octet-stream" && !t.starts_with("multipart/") => {
            t.to_owned()
        }
        _ => mime_guess::from_path(name.as_str()).first_or_octet_stream().essence_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert_eq!(FileName::new(""), Err(NameError::Empty));
        assert_eq!(FileName::new("a\nb"), Err(NameError::ControlCharacter));
        assert_eq!(FileName::new("x".repeat(1089)), Err(NameError::TooLong));
        assert!(FileName::new("x".repeat(1088)).is_ok());
        assert_eq!(FileName::new("dir/ü.txt").unwrap().base(), "ü.txt");
    }

    #[test]
    fn refuses_what_would_act_on_or_look_like_another_name() {
        for dots in ["..", ".", "a/../b", "a/./b", "../b", "a/..", "./a"] {
            assert_eq!(FileName::new(dots), Err(NameError::DotSegment), "{dots}");
        }
        // Dots inside a segment are ordinary names.
        for ok in ["a..b", ".hidden", "a/.config/x", "...", "a/.../b", "v1.2..3"] {
            assert!(FileName::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(FileName::new("a\\b"), Err(NameError::Backslash));
        assert_eq!(FileName::new("invoice\u{202e}fdp.exe"), Err(NameError::Invisible(0x202e)));
        assert_eq!(FileName::new("pay\u{200b}pal"), Err(NameError::Invisible(0x200b)));
        assert_eq!(FileName::new("pay\u{200d}pal"), Err(NameError::Invisible(0x200d)));
        assert_eq!(FileName::new("\u{feff}x"), Err(NameError::Invisible(0xfeff)));
        // Joiners inside emoji sequences and scripts that need them stay.
        assert!(FileName::new("family \u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}.jpg").is_ok());
        assert!(FileName::new("\u{645}\u{06cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}").is_ok());
    }

    #[test]
    fn two_forms_of_one_letter_are_one_name() {
        let composed = FileName::new("caf\u{e9}.txt").unwrap();
        let decomposed = FileName::new("cafe\u{301}.txt").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(decomposed.as_str(), "caf\u{e9}.txt");
    }
}
