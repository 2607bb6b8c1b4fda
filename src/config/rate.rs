//! Validation of `routes[i].rate_limits`.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::raw::RawRateLimit;
use super::validate::Validator;
use super::{AuthMethods, LimitBy, Place, RateLimit};

/// Longest rate period.
const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// Longest time a full bucket takes to refill (`burst` requests at the rate).
const MAX_REFILL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `<count>/<period>`: `100/s`, `6000/m`, `50000/h`, or a duration such as `10/30s`.
pub(crate) fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("invalid rate {text:?} (expected <count>/<period>, e.g. 100/s, 6000/m or 10/30s)");
    let (count, period) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let period = match period.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => super::units::parse_duration(other).map_err(|_| bad())?,
    };
    if count == 0 || period.is_zero() {
        return Err(format!("invalid rate {text:?}: count and period must be greater than zero"));
    }
    if period / count < Duration::from_nanos(1) {
        return Err(format!("invalid rate {text:?}: more than one request per nanosecond"));
    }
    if period > MAX_PERIOD {
        return Err(format!("invalid rate {text:?}: the period is at most 24h"));
    }
    Ok((count, period))
}

impl Validator<'_> {
    pub(super) fn rate_limits(
        &mut self,
        raw: &[Spanned<RawRateLimit>],
        field: &str,
        auth: AuthMethods,
    ) -> Vec<RateLimit> {
        let mut out: Vec<RateLimit> = Vec::with_capacity(raw.len());
        for (i, item) in raw.iter().enumerate() {
            let field = format!("{field}.rate_limits[{i}]");
            let by = self.check(&item.value.by, format!("{field}.by"), |s| match s.as_str() {
                "ip" => Ok(LimitBy::Ip),
                "did" if auth.is_public() => Err("a public route has no DID to count by".to_owned()),
                "did" => Ok(LimitBy::Did),
                "client_id" if !auth.dpop => Err("client_id exists only on dpop routes".to_owned()),
                "client_id" => Ok(LimitBy::ClientId),
                other => Err(format!("unknown key {other:?} (expected: ip, did or client_id)")),
            });
            let rate = self.check(&item.value.rate, format!("{field}.rate"), |s| parse_rate(s));
            let burst = match &item.value.burst {
                Some(b) => self.check(b, format!("{field}.burst"), |&b| match u32::try_from(b) {
                    Ok(b) if b > 0 => Ok(Some(b)),
                    _ => Err(format!("must be between 1 and {}", u32::MAX)),
                }),
                None => Some(None),
            };
            let (Some(by), Some((requests, period)), Some(burst)) = (by, rate, burst) else { continue };
            let limit = RateLimit { by, requests, period, burst: burst.unwrap_or(requests) };
            if (period / requests).checked_mul(limit.burst).is_none_or(|refill| refill > MAX_REFILL) {
                self.error(Place::of(item), field, "burst takes more than a year to refill at this rate");
                continue;
            }
            if out.iter().any(|l| l.by == by && l.period == period) {
                self.error(Place::of(item), field, format!("a second {} limit over the same period", by.as_str()));
                continue;
            }
            out.push(limit);
        }
        out
    }
}
