//! What the capabilities share: `ClerkServices` (the Clerk client and the two caches
//! that cannot exist without it, present or absent together) and `Fanout`, the one
//! place where a change fans out to every cache that may hold it, on this instance and
//! (through the bus) on the others.
//!
//! A capability that caches something derived from a Clerk user adds its invalidation
//! here (one line in `user_changed`, one in `handler` for other instances' events),
//! never in the code that noticed the change.

use std::sync::Arc;

use crate::bus::{self, Bus, BusEvent, Overflow};
use crate::clock::SharedClock;
use crate::context::ContextService;
use crate::error::Result;
use crate::events::{AppEvent, EventHub};
use crate::proxy::ReadCache;
use crate::respcache::ResponseCache;
use crate::store::Store;
use crate::tokens::Verifier;
use crate::upstream::ClerkClient;
use crate::users::UserCache;

/// The Backend API client, the tiered user cache and the proxy's read cache: one
/// value, present exactly when a Clerk secret key is configured.
#[derive(Clone)]
pub struct ClerkServices {
    pub client: Arc<ClerkClient>,
    pub users: UserCache,
    pub reads: Arc<ReadCache>,
}

/// The one place where a change fans out. Cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    clerk: Option<ClerkServices>,
    context: ContextService,
    verifier: Option<Verifier>,
    bus: Arc<Bus>,
    store: Store,
    clock: SharedClock,
    events: EventHub,
    respcache: Arc<ResponseCache>,
}

impl Fanout {
    /// Every handle a change may have to reach; built once, by the façade's builder.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        clerk: Option<ClerkServices>,
        context: ContextService,
        verifier: Option<Verifier>,
        bus: Arc<Bus>,
        store: Store,
        clock: SharedClock,
        events: EventHub,
        respcache: Arc<ResponseCache>,
    ) -> Self {
        Self {
            clerk,
            context,
            verifier,
            bus,
            store,
            clock,
            events,
            respcache,
        }
    }

    /// A Clerk user changed (webhook, API): forget every cached answer about them,
    /// here and on every other instance. The L2 deletes and the announcement are
    /// queued on the bus (retried until Redis takes them); `Err` when they could not
    /// be queued, so the caller's work is retried.
    pub async fn user_changed(&self, clerk_id: &str) -> std::result::Result<(), Overflow> {
        let mut keys = Vec::with_capacity(2);
        if let Some(c) = &self.clerk {
            keys.extend(c.users.forget_local(clerk_id));
        }
        keys.extend(self.context.forget_local(clerk_id));
        self.bus.enqueue(
            keys,
            Some(BusEvent::UserInvalidated {
                id: clerk_id.to_string(),
            }),
        )
    }

    /// A session ended or was revoked: its tokens are refused until `until_ms`
    /// (their latest possible expiry), on this instance at once, on the others when
    /// the bus delivers it, and after any restart (it is stored first). `fence`: the
    /// webhook message and claim this runs under (see `Store::revocation_put`).
    pub async fn session_revoked(
        &self,
        sid: &str,
        until_ms: u64,
        fence: Option<(&str, i64)>,
    ) -> Result<()> {
        let now = self.clock.now_ms();
        self.store
            .revocation_put(sid, until_ms as i64, now as i64, fence)
            .await?;
        if let Some(v) = &self.verifier {
            v.revoke_session(sid, until_ms);
        }
        self.bus
            .enqueue(
                Vec::new(),
                Some(BusEvent::SessionRevoked {
                    sid: sid.to_string(),
                    until_ms,
                }),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    /// Voids the proxy's cached reads of namespace `ns` on every instance.
    pub async fn namespace_changed(&self, ns: &str) {
        if let Some(c) = &self.clerk {
            c.reads.bump(ns, &self.bus).await;
        }
    }

    /// A tenant's data changed (an `organization.*` or `user.*` webhook): void every
    /// cached response of that tenant on every instance.
    pub async fn tenant_changed(&self, tenant: &str) -> std::result::Result<(), Overflow> {
        self.respcache
            .invalidate(tenant, None, crate::respcache::Source::Webhook)
            .await
    }

    /// Tells this instance's subscribers (SSE, jobs, tests).
    pub fn publish(&self, event: AppEvent) {
        self.events.publish(event);
    }

    /// Applies other instances' announcements to this instance's in-process caches.
    pub fn handler(&self) -> bus::Handler {
        let this = self.clone();
        Arc::new(move |event| match event {
            BusEvent::SessionRevoked { sid, until_ms } => {
                if let Some(v) = &this.verifier {
                    v.revoke_session(&sid, until_ms);
                }
            }
            BusEvent::UserInvalidated { id } => {
                if let Some(c) = &this.clerk {
                    c.users.evict_local(&id);
                }
                this.context.evict_local(&id);
            }
            BusEvent::ProxyNamespaceBumped { namespace } => {
                if let Some(c) = &this.clerk {
                    c.reads.bump_local(&namespace);
                }
            }
            BusEvent::ResponseCacheInvalidated { tenant, resource } => {
                this.respcache.on_invalidated(&tenant, resource.as_deref());
            }
            BusEvent::Resync => {
                this.respcache.clear_local();
                // A revocation announced while this reader was away is in the store:
                // reload now rather than at the next periodic sync.
                if let Some(v) = &this.verifier {
                    let (store, verifier, now) =
                        (this.store.clone(), v.clone(), this.clock.now_ms());
                    tokio::spawn(async move {
                        if let Err(e) = load_revocations(&store, &verifier, now).await {
                            tracing::warn!(error = %e, "cannot reload stored revocations after a resync");
                        }
                    });
                }
                this.context.clear_local();
                if let Some(c) = &this.clerk {
                    c.users.clear_local();
                    c.reads.clear_local();
                }
            }
        })
    }
}

/// Loads the stored, unexpired revocations into the verifier (at start, every few
/// seconds, and after a bus resync); answers how many there were.
pub async fn load_revocations(store: &Store, verifier: &Verifier, now_ms: u64) -> Result<usize> {
    let limit = verifier.config().max_revocations as i64;
    let rows = store.revocations_active(now_ms as i64, limit).await?;
    for (sid, until) in &rows {
        verifier.revoke_session(sid, (*until).max(0) as u64);
    }
    Ok(rows.len())
}
