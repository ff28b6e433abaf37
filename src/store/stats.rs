//! The figures county centres report: sessions accepted (受理) and concluded (办结) by site, kind
//! and period, their durations and outcomes, and satisfaction (满意率) from participants' ratings.

use serde::Serialize;
use sqlx::Row;

use super::{Result, Store};

/// Which sessions count: created in [from, to), optionally one kind and one site.
#[derive(Debug, Clone, Default)]
pub struct StatsFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    pub kind: Option<String>,
    pub site_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Counts {
    /// Sessions scheduled in the period (受理).
    pub sessions: i64,
    pub opened: i64,
    /// Sessions closed (办结).
    pub closed: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub totals: Counts,
    pub by_kind: Vec<(String, Counts)>,
    /// (site id, site name, counts); sessions without a site are under `null`.
    pub by_site: Vec<(Option<String>, Option<String>, Counts)>,
    pub duration_minutes: DurationStats,
    pub outcomes: Vec<(String, i64)>,
    pub satisfaction: Satisfaction,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DurationStats {
    pub count: i64,
    pub mean: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Satisfaction {
    pub ratings: i64,
    pub mean_score: Option<f64>,
    /// Share of ratings of 4 or 5 (满意率).
    pub satisfied_rate: Option<f64>,
}

/// Sessions created in [from, to), of one kind, at one site (each filter optional; parameters
/// ?1–?4 are bound in that order by every query).
macro_rules! filtered {
    ($select:literal, $tail:literal) => {
        concat!(
            $select,
            " FROM sessions s LEFT JOIN sites t ON t.id = s.site_id WHERE (?1 IS NULL OR s.created_at >= ?1) AND (?2 IS NULL OR s.created_at < ?2) AND (?3 IS NULL OR s.kind = ?3) AND (?4 IS NULL OR s.site_id = ?4) ",
            $tail
        )
    };
}

impl Store {
    pub async fn stats(&self, f: &StatsFilter) -> Result<Stats> {
        let bind = |q: sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>| {
            q.bind(f.from.clone()).bind(f.to.clone()).bind(f.kind.clone()).bind(f.site_id.clone())
        };
        let counts = |r: &sqlx::sqlite::SqliteRow, at: usize| Counts {
            sessions: r.get(at),
            opened: r.get(at + 1),
            closed: r.get(at + 2),
        };

        let r = bind(sqlx::query(filtered!(
            "SELECT COUNT(*), COALESCE(SUM(s.opened_at IS NOT NULL), 0), COALESCE(SUM(s.status = 'closed'), 0)",
            ""
        )))
        .fetch_one(&self.pool)
        .await?;
        let totals = counts(&r, 0);

        let rows = bind(sqlx::query(filtered!(
            "SELECT s.kind, COUNT(*), COALESCE(SUM(s.opened_at IS NOT NULL), 0), COALESCE(SUM(s.status = 'closed'), 0)",
            "GROUP BY s.kind ORDER BY s.kind"
        )))
        .fetch_all(&self.pool)
        .await?;
        let by_kind = rows.iter().map(|r| (r.get::<String, _>(0), counts(r, 1))).collect();

        let rows = bind(sqlx::query(filtered!(
            "SELECT s.site_id, t.name, COUNT(*), COALESCE(SUM(s.opened_at IS NOT NULL), 0), COALESCE(SUM(s.status = 'closed'), 0)",
            "GROUP BY s.site_id ORDER BY COUNT(*) DESC, s.site_id"
        )))
        .fetch_all(&self.pool)
        .await?;
        let by_site = rows.iter().map(|r| (r.get(0), r.get(1), counts(r, 2))).collect();

        let r = bind(sqlx::query(filtered!(
            "SELECT COUNT(*), AVG((julianday(s.closed_at) - julianday(s.opened_at)) * 1440.0), MAX((julianday(s.closed_at) - julianday(s.opened_at)) * 1440.0)",
            "AND s.opened_at IS NOT NULL AND s.closed_at IS NOT NULL"
        )))
        .fetch_one(&self.pool)
        .await?;
        let duration_minutes = DurationStats { count: r.get(0), mean: r.get(1), max: r.get(2) };

        let rows = bind(sqlx::query(filtered!(
            "SELECT COALESCE(s.outcome, 'unspecified'), COUNT(*)",
            "AND s.status = 'closed' GROUP BY 1 ORDER BY 2 DESC, 1"
        )))
        .fetch_all(&self.pool)
        .await?;
        let outcomes = rows.iter().map(|r| (r.get(0), r.get(1))).collect();

        let r = bind(sqlx::query(concat!(
            "SELECT COUNT(p.rating), AVG(p.rating), AVG(CASE WHEN p.rating >= 4 THEN 1.0 ELSE 0.0 END) ",
            "FROM participants p JOIN sessions s ON s.id = p.session_id ",
            "WHERE p.rating IS NOT NULL AND (?1 IS NULL OR s.created_at >= ?1) AND (?2 IS NULL OR s.created_at < ?2) ",
            "AND (?3 IS NULL OR s.kind = ?3) AND (?4 IS NULL OR s.site_id = ?4)"
        )))
        .fetch_one(&self.pool)
        .await?;
        let satisfaction = Satisfaction { ratings: r.get(0), mean_score: r.get(1), satisfied_rate: r.get(2) };

        Ok(Stats { totals, by_kind, by_site, duration_minutes, outcomes, satisfaction })
    }

    /// Records how a session ended.
    pub async fn set_outcome(&self, session_id: &str, outcome: &str) -> Result<()> {
        sqlx::query("UPDATE sessions SET outcome = ? WHERE id = ?")
            .bind(outcome)
            .bind(session_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
