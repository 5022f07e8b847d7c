//! "Now" for every time-based decision of both binaries (expiry, budget
//! periods). In production it is the system clock. For end-to-end tests
//! only, a hidden flag (`--dev-clock-offset-file`) names a file holding a
//! number of seconds to add, re-read at every decision, so a test can roll
//! a budget period over without waiting for it. A missing, empty or
//! unreadable file means no offset.

use std::path::PathBuf;

use jiff::{SignedDuration, Timestamp};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_file: Option<PathBuf>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// The system clock shifted by the seconds in `file` (test-only).
    pub fn shifted_by(file: Option<PathBuf>) -> Clock {
        Clock { offset_file: file }
    }

    pub fn now(&self) -> Timestamp {
        let now = Timestamp::now();
        match self.offset_secs() {
            0 => now,
            secs => now
                .checked_add(SignedDuration::from_secs(secs))
                .unwrap_or(now),
        }
    }

    /// The offset in seconds (0 without a file).
    pub fn offset_secs(&self) -> i64 {
        self.offset_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map_or(0, |text| parse_offset(&text))
    }
}

/// A whole number of seconds, possibly negative; anything else is 0.
pub fn parse_offset(text: &str) -> i64 {
    text.trim().parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_file_shifts_now_and_a_bad_one_does_not() {
        assert_eq!(parse_offset("86400\n"), 86_400);
        assert_eq!(parse_offset("-5"), -5);
        assert_eq!(parse_offset("soon"), 0);
        assert_eq!(parse_offset(""), 0);
        let dir = std::env::temp_dir().join(format!("strake-clock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("offset");
        let clock = Clock::shifted_by(Some(file.clone()));
        assert_eq!(clock.offset_secs(), 0);
        std::fs::write(&file, "3600").unwrap();
        let shifted = clock.now().as_second() - Timestamp::now().as_second();
        assert!((3599..=3601).contains(&shifted), "{shifted}");
        assert_eq!(Clock::system().offset_secs(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
