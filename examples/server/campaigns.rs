//! The campaigns: each API key's workspace of seeded campaigns, and starting one.

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use lru::LruCache;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// Per-key workspaces, at most `max` of them; the least recently used is evicted for a new key.
///
/// Keys are held as received; the limiter has already refused any longer than
/// [`ratewindow::MAX_KEY_LEN`], so memory stays bounded by `max` workspaces of bounded size.
pub struct Workspaces {
    lru: Mutex<LruCache<String, Workspace>>,
}

impl Workspaces {
    /// Room for `max` workspaces (at least 1).
    pub fn new(max: usize) -> Workspaces {
        let max = NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN);
        Workspaces {
            lru: Mutex::new(LruCache::new(max)),
        }
    }

    /// Runs `f` on `key`'s workspace, seeding it first if `key` has none.
    pub fn with<R>(&self, key: &str, f: impl FnOnce(&mut Workspace) -> R) -> R {
        let mut lru = self.lock();
        f(lru.get_or_insert_mut_ref(key, Workspace::seeded))
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<String, Workspace>> {
        // The critical sections cannot panic midway, so a poisoned lock still holds sound data.
        self.lru.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Draft,
    Paused,
    Active,
    Completed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Paused => "paused",
            Status::Active => "active",
            Status::Completed => "completed",
        }
    }
}

pub struct Campaign {
    id: &'static str,
    name: &'static str,
    status: Status,
    sequence_steps: u32,
    leads_enrolled: u32,
    email_accounts: u32,
    created_at: &'static str,
    started_at: Option<String>,
}

impl Campaign {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "status": self.status.as_str(),
            "sequenceSteps": self.sequence_steps,
            "leadsEnrolled": self.leads_enrolled,
            "emailAccounts": self.email_accounts,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
        })
    }
}

pub struct Workspace {
    campaigns: Vec<Campaign>,
}

impl Workspace {
    fn seeded() -> Workspace {
        let campaign =
            |id, name, status, sequence_steps, leads_enrolled, email_accounts| Campaign {
                id,
                name,
                status,
                sequence_steps,
                leads_enrolled,
                email_accounts,
                created_at: "2025-01-10T14:30:00",
                started_at: match status {
                    Status::Paused | Status::Completed => Some("2025-01-12T09:00:00".to_owned()),
                    Status::Draft | Status::Active => None,
                },
            };
        Workspace {
            campaigns: vec![
                campaign("cmp_abc123", "Q1 Outreach", Status::Draft, 3, 250, 2),
                campaign("cmp_xyz789", "Partner Follow-up", Status::Paused, 2, 80, 1),
                campaign("cmp_done", "Holiday Promo", Status::Completed, 4, 500, 3),
                campaign("cmp_nosteps", "Untitled Draft", Status::Draft, 0, 40, 1),
            ],
        }
    }

    pub fn find(&self, id: &str) -> Option<&Campaign> {
        self.campaigns.iter().find(|c| c.id == id)
    }

    /// Moves a draft or paused campaign that meets the prerequisites to active.
    pub fn start(&mut self, id: &str, now: String) -> Result<Value, CampaignError> {
        let campaign = self
            .campaigns
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or(CampaignError::NotFound)?;
        match campaign.status {
            Status::Active => return Err(CampaignError::AlreadyActive),
            Status::Completed => return Err(CampaignError::Completed),
            Status::Draft | Status::Paused => {}
        }
        if campaign.sequence_steps == 0 {
            return Err(CampaignError::NoSequenceSteps);
        }
        if campaign.leads_enrolled == 0 {
            return Err(CampaignError::NoLeads);
        }
        if campaign.email_accounts == 0 {
            return Err(CampaignError::NoEmailAccounts);
        }
        campaign.status = Status::Active;
        campaign.started_at = Some(now);
        Ok(campaign.to_json())
    }
}

/// Why a campaign cannot be started (or found).
pub enum CampaignError {
    NotFound,
    AlreadyActive,
    Completed,
    NoSequenceSteps,
    NoLeads,
    NoEmailAccounts,
}

/// Now, in unix seconds.
pub fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `unix_secs` as a UTC ISO-8601 date-time without offset, e.g. `2025-01-15T09:00:00`; a time
/// after the year 9999 reads as its last second.
pub fn utc_timestamp(unix_secs: u64) -> String {
    let at = i64::try_from(unix_secs)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or_else(|| {
            time::PrimitiveDateTime::MAX
                .assume_utc()
                .replace_nanosecond(0)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        });
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}
