//! Reading incidents and dead letters.

use super::{PgStore, corrupt, count, query, query_one, query_opt};
use crate::model::*;
use crate::StoreError;
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tw_core::{IncidentNumber, Severity, SourceName};
use uuid::Uuid;

pub(super) const INCIDENT_COLUMNS: &str = "id, year, seq, source, format, title, description, severity, vendor_severity, status, \
    event_type, event_time, received_at, external_id, entities, delivery_count, last_delivery_at, auto_triage, playbook, request_id, triage";

pub(super) fn incident_from_row(r: &Row, with_raw: bool) -> Result<Incident, StoreError> {
    let source: String = r.get(3);
    let format: String = r.get(4);
    let severity: String = r.get(7);
    let status: String = r.get(9);
    let entities: String = r.get(14);
    Ok(Incident {
        id: r.get(0),
        incident_number: IncidentNumber::new(r.get(1), r.get(2)),
        source: SourceName::parse(&source).map_err(corrupt("source"))?,
        format: format.parse().map_err(corrupt("format"))?,
        title: r.get(5),
        description: r.get(6),
        severity: severity.parse::<Severity>().map_err(corrupt("severity"))?,
        vendor_severity: r.get(8),
        status: status.parse::<IncidentStatus>().map_err(corrupt("status"))?,
        event_type: r.get(10),
        event_time: r.get(11),
        received_at: r.get(12),
        external_id: r.get(13),
        entities: serde_json::from_str(&entities).map_err(corrupt("entities"))?,
        delivery_count: count(r.get(15)),
        last_delivery_at: r.get(16),
        auto_triage: r.get(17),
        playbook: r.get(18),
        request_id: r.get(19),
        triage: r.get::<_, Option<String>>(20).map(|t| serde_json::from_str(&t)).transpose().map_err(corrupt("triage"))?,
        raw: if with_raw { Some(r.get(21)) } else { None },
    })
}

/// One incident with its raw payload.
pub(super) async fn load_incident(c: &impl GenericClient, id: Uuid) -> Result<Option<Incident>, StoreError> {
    let sql = format!("SELECT {INCIDENT_COLUMNS}, raw_payload FROM incidents WHERE id = $1");
    query_opt(c, &sql, &[&id]).await?.map(|r| incident_from_row(&r, true)).transpose()
}

#[async_trait]
impl crate::IncidentStore for PgStore {
    async fn get_incident(&self, key: &IncidentKey) -> Result<Option<Incident>, StoreError> {
        let c = self.client().await?;
        match key {
            IncidentKey::Id(id) => load_incident(&c, *id).await,
            IncidentKey::Number(n) => {
                let sql = format!("SELECT {INCIDENT_COLUMNS}, raw_payload FROM incidents WHERE year = $1 AND seq = $2");
                query_opt(&c, &sql, &[&n.year, &n.seq]).await?.map(|r| incident_from_row(&r, true)).transpose()
            }
        }
    }

    async fn list_incidents(&self, f: &IncidentFilter) -> Result<(Vec<Incident>, u64), StoreError> {
        let c = self.client().await?;
        let cond = "($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR severity = $2) AND ($3::text IS NULL OR status = $3)";
        let source = f.source.as_ref().map(SourceName::as_str);
        let severity = f.severity.map(Severity::as_str);
        let status = f.status.map(IncidentStatus::as_str);
        let total: i64 = query_one(&c, &format!("SELECT COUNT(*) FROM incidents WHERE {cond}"), &[&source, &severity, &status]).await?.get(0);
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE {cond} ORDER BY received_at DESC, year DESC, seq DESC LIMIT $4 OFFSET $5"
        );
        let rows = query(&c, &sql, &[&source, &severity, &status, &i64::from(f.page.per_page), &(f.page.offset() as i64)]).await?;
        let items = rows.iter().map(|r| incident_from_row(r, false)).collect::<Result<_, _>>()?;
        Ok((items, count(total)))
    }

    async fn list_dead_letters(&self, source: Option<&SourceName>, page: Page) -> Result<(Vec<DeadLetter>, u64), StoreError> {
        let c = self.client().await?;
        let s = source.map(SourceName::as_str);
        let total: i64 = query_one(&c, "SELECT COUNT(*) FROM dead_letters WHERE ($1::text IS NULL OR source = $1)", &[&s]).await?.get(0);
        let rows = query(
            &c,
            "SELECT id, source, reason, received_at, request_id, queue_id, raw_payload FROM dead_letters \
             WHERE ($1::text IS NULL OR source = $1) ORDER BY received_at DESC, id DESC LIMIT $2 OFFSET $3",
            &[&s, &i64::from(page.per_page), &(page.offset() as i64)],
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let source: String = r.get(1);
            let raw: Vec<u8> = r.get(6);
            out.push(DeadLetter {
                id: r.get(0),
                source: SourceName::parse(&source).map_err(corrupt("source"))?,
                reason: r.get(2),
                received_at: r.get(3),
                request_id: r.get(4),
                queue_id: r.get(5),
                raw_payload: String::from_utf8_lossy(&raw).into_owned(),
            });
        }
        Ok((out, count(total)))
    }
}
