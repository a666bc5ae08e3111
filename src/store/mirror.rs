//! Every stored token in memory, merged into the directory the request path reads.
//!
//! The token endpoint, push grace, refresh tokens and the tag guard all look tokens up in the
//! [`SharedDirectory`]; the mirror keeps that directory equal to gateway.yaml's plus the
//! store's tokens, so none of them ever waits on the store, a store that is down changes
//! nothing for tokens already known, and a revocation written here is in force before the
//! API answers. Another replica's writes arrive with the next poll ([`super::SYNC_INTERVAL`]).
//!
//! Bounded: the store holds at most [`super::MAX_TOKENS`]; last-use times wait in a map of at
//! most that many entries until the next flush.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use time::OffsetDateTime;

use super::{StoreError, StoredToken, TokenKind, TokenStore, STORE_TIMEOUT, SYNC_INTERVAL};
use crate::auth::directory::{
    Directory, NamespaceKind, NamespaceToken, PersonalAccessToken, RegistryScopes, SharedDirectory,
};
use crate::auth::identity::Health;
use crate::auth::scope::RepositoryName;

/// The store's tokens in memory and the merged directory.
pub struct StoreMirror {
    shared: SharedDirectory,
    store: OnceLock<Arc<dyn TokenStore>>,
    state: Mutex<State>,
    /// Last uses not yet written, by token id.
    used: Mutex<HashMap<u64, OffsetDateTime>>,
    /// Told the binding of every token revoked (here or on another replica), so registry
    /// tokens issued for it stop at once ([`crate::auth::token::Tokens::revoke_binding`]).
    on_revoke: OnceLock<RevokeHook>,
}

/// What the mirror calls with the binding of a revoked token.
pub type RevokeHook = Box<dyn Fn(&str) + Send + Sync>;

struct State {
    /// gateway.yaml's directory.
    base: Arc<Directory>,
    tokens: Vec<StoredToken>,
    /// Token ids by digest (for last-use times).
    by_digest: HashMap<[u8; 32], u64>,
    version: Option<i64>,
    health: Health,
}

impl StoreMirror {
    /// A mirror over `shared` (which holds gateway.yaml's directory now), with no store yet.
    pub fn new(shared: SharedDirectory) -> Arc<StoreMirror> {
        Arc::new(StoreMirror {
            state: Mutex::new(State {
                base: shared.get(),
                tokens: Vec::new(),
                by_digest: HashMap::new(),
                version: None,
                health: Health::Degraded("the token store is not open yet".into()),
            }),
            shared,
            store: OnceLock::new(),
            used: Mutex::new(HashMap::new()),
            on_revoke: OnceLock::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store, once it was opened.
    pub fn store(&self) -> Result<&Arc<dyn TokenStore>, StoreError> {
        self.store
            .get()
            .ok_or_else(|| StoreError::Unavailable("the token store is not open".into()))
    }

    /// The directory in force (gateway.yaml's and the store's tokens).
    pub fn directory(&self) -> Arc<Directory> {
        self.shared.get()
    }

    /// gateway.yaml's directory alone (to list its tokens read-only).
    pub fn base(&self) -> Arc<Directory> {
        self.state().base.clone()
    }

    /// A copy of every stored token.
    pub fn tokens(&self) -> Vec<StoredToken> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut tokens = self.state().tokens.clone();
        for token in &mut tokens {
            if let Some(at) = used.get(&token.id) {
                token.last_used_at = Some(*at);
            }
        }
        tokens
    }

    /// The scope names of the stored token with this digest (`None`: not a stored token).
    pub fn tokens_scopes(&self, digest: &[u8; 32]) -> Option<Vec<String>> {
        let state = self.state();
        let id = state.by_digest.get(digest)?;
        state
            .tokens
            .iter()
            .find(|t| t.id == *id)
            .map(|t| t.scopes.clone())
    }

    /// Whether the store answered the last poll.
    pub fn health(&self) -> Health {
        self.state().health.clone()
    }

    /// A reloaded gateway.yaml: merge the store's tokens into its directory.
    pub fn set_base(&self, base: Directory) {
        let mut state = self.state();
        state.base = Arc::new(base);
        self.publish(&state);
    }

    /// Set what to call with the binding of each revoked token (once).
    pub fn on_revoke(&self, hook: RevokeHook) {
        let _ = self.on_revoke.set(hook);
    }

    /// Tell the hook of tokens revoked in `after` that were not in `before`.
    fn revoked_since(&self, before: &[StoredToken], after: &[StoredToken]) {
        let Some(hook) = self.on_revoke.get() else {
            return;
        };
        let was_revoked: HashMap<u64, bool> = before.iter().map(|t| (t.id, t.revoked)).collect();
        for token in after.iter().filter(|t| t.revoked) {
            if was_revoked.get(&token.id) != Some(&true) {
                hook(&crate::auth::credentials::token_binding(
                    token.kind == TokenKind::Personal,
                    &token.digest,
                ));
            }
        }
    }

    /// A write went through on this replica: in force at once.
    pub fn apply(&self, change: impl FnOnce(&mut Vec<StoredToken>)) {
        let mut state = self.state();
        let before = state.tokens.clone();
        change(&mut state.tokens);
        self.revoked_since(&before, &state.tokens);
        state.by_digest = state.tokens.iter().map(|t| (t.digest, t.id)).collect();
        self.publish(&state);
    }

    /// A login used the token with this digest (if it is one of the store's).
    pub fn note_use(&self, digest: &[u8; 32], at: OffsetDateTime) {
        let Some(id) = self.state().by_digest.get(digest).copied() else {
            return;
        };
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.len() < super::MAX_TOKENS || used.contains_key(&id) {
            used.insert(id, at);
        }
    }

    /// A hook for the token endpoint: note the use of a stored token.
    pub fn usage_hook(self: &Arc<Self>) -> crate::auth::endpoint::UsageHook {
        let mirror = Arc::downgrade(self);
        Arc::new(move |principal| {
            let digest = match principal {
                crate::auth::credentials::Principal::User {
                    credential:
                        crate::auth::credentials::Credential::PersonalAccessToken { digest, .. },
                    ..
                } => digest,
                crate::auth::credentials::Principal::Token(token) => &token.digest,
                _ => return,
            };
            if let Some(mirror) = mirror.upgrade() {
                mirror.note_use(digest, OffsetDateTime::now_utc());
            }
        })
    }

    fn publish(&self, state: &State) {
        let mut personal = Vec::new();
        let mut namespace = Vec::new();
        for token in &state.tokens {
            // Expired and revoked tokens stay in the merged directory so a login with one
            // is told so; they hold no rights (credentials::usable refuses them).
            let Ok(scopes) = RegistryScopes::parse(&token.scopes) else {
                continue;
            };
            let expires_at = token.expires_at.map(|day| day.midnight().assume_utc());
            match token.kind {
                TokenKind::Personal => personal.push((
                    token.owner.clone(),
                    PersonalAccessToken {
                        name: token.name.clone(),
                        digest: token.digest,
                        scopes,
                        expires_at,
                        revoked: token.revoked,
                    },
                )),
                kind => {
                    let Ok(path) = RepositoryName::parse(&token.owner) else {
                        continue;
                    };
                    let namespace_kind = match kind {
                        TokenKind::ProjectAccess | TokenKind::ProjectDeploy => {
                            NamespaceKind::Project
                        }
                        _ => NamespaceKind::Group,
                    };
                    namespace.push(NamespaceToken {
                        username: token.username.clone(),
                        digest: token.digest,
                        scopes,
                        expires_at,
                        revoked: token.revoked,
                        namespace: path,
                        namespace_kind,
                        role: if kind.is_deploy() {
                            None
                        } else {
                            token.access_level
                        },
                    });
                }
            }
        }
        if personal.is_empty() && namespace.is_empty() {
            // Nothing to merge: the base itself, not a second copy of a directory that may
            // hold 100,000 projects.
            self.shared.replace_shared(state.base.clone());
        } else {
            self.shared
                .replace(state.base.with_tokens(personal, namespace));
        }
    }

    /// Open `url` and keep the mirror in step with it, on a thread of its own (the store's
    /// connections and polls never run on a request worker). Waits for the first attempt to
    /// open and load it (at most [`STORE_TIMEOUT`] and a little), so a gateway whose store
    /// answers serves its tokens from the first request; a store that does not answer is
    /// retried in the background, and until it opens only gateway.yaml's credentials work
    /// and API writes answer 503.
    pub fn start(self: &Arc<Self>, url: String) -> std::io::Result<()> {
        let (opened, first) = std::sync::mpsc::sync_channel::<()>(1);
        let mirror = Arc::clone(self);
        std::thread::Builder::new()
            .name("portcullis-store".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::error!("token store: cannot start its runtime: {error}");
                        return;
                    }
                };
                runtime.block_on(mirror.run(url, opened));
            })?;
        let _ = first.recv_timeout(STORE_TIMEOUT * 2 + std::time::Duration::from_secs(1));
        Ok(())
    }

    /// Open the store (retrying while it is down), then poll it.
    async fn run(self: Arc<Self>, url: String, opened: std::sync::mpsc::SyncSender<()>) {
        let mut first = Some(opened);
        let store = loop {
            match tokio::time::timeout(STORE_TIMEOUT, super::open(&url)).await {
                Ok(Ok(store)) => break store,
                Ok(Err(error)) => {
                    if first.is_some() {
                        tracing::warn!(store = %redact_url(&url), "token store: cannot open it: {error}; gateway.yaml's credentials work, API writes answer 503; retrying every {SYNC_INTERVAL:?}");
                    }
                    self.degraded(error.to_string())
                }
                Err(_) => self.degraded("opening the token store timed out".into()),
            }
            if let Some(opened) = first.take() {
                let _ = opened.try_send(());
            }
            tokio::time::sleep(SYNC_INTERVAL).await;
        };
        let _ = self.store.set(store.clone());
        self.sync(&store).await;
        tracing::info!(store = %redact_url(&url), tokens = self.state().tokens.len(), "token store open");
        if let Some(opened) = first.take() {
            let _ = opened.try_send(());
        }
        loop {
            self.sync(&store).await;
            self.flush(&store).await;
            tokio::time::sleep(SYNC_INTERVAL).await;
        }
    }

    fn degraded(&self, why: String) {
        let mut state = self.state();
        if state.health == Health::Up {
            tracing::warn!("token store unavailable: {why}; gateway.yaml's credentials and the tokens already loaded keep working, API writes answer 503");
        }
        state.health = Health::Degraded(why);
    }

    /// Reload every token when the store's change counter moved.
    pub async fn sync(&self, store: &Arc<dyn TokenStore>) {
        let version = match tokio::time::timeout(STORE_TIMEOUT, store.version()).await {
            Ok(Ok(version)) => version,
            Ok(Err(error)) => return self.degraded(error.to_string()),
            Err(_) => return self.degraded("the token store did not answer in time".into()),
        };
        if self.state().version == Some(version) {
            self.state().health = Health::Up;
            return;
        }
        match tokio::time::timeout(STORE_TIMEOUT, store.load_all()).await {
            Ok(Ok(tokens)) => {
                let mut state = self.state();
                if state.health != Health::Up {
                    tracing::info!(
                        tokens = tokens.len(),
                        "token store reachable; tokens loaded"
                    );
                }
                state.by_digest = tokens.iter().map(|t| (t.digest, t.id)).collect();
                if state.version.is_some() {
                    self.revoked_since(&state.tokens, &tokens);
                }
                state.tokens = tokens;
                state.version = Some(version);
                state.health = Health::Up;
                self.publish(&state);
            }
            Ok(Err(error)) => self.degraded(error.to_string()),
            Err(_) => self.degraded("the token store did not answer in time".into()),
        }
    }

    /// Write last-use times (kept for the next flush if the store is down).
    async fn flush(&self, store: &Arc<dyn TokenStore>) {
        let used: Vec<(u64, OffsetDateTime)> = {
            let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            used.iter().map(|(id, at)| (*id, *at)).collect()
        };
        if used.is_empty() {
            return;
        }
        if let Ok(Ok(())) = tokio::time::timeout(STORE_TIMEOUT, store.touch(&used)).await {
            let mut pending = self.used.lock().unwrap_or_else(|e| e.into_inner());
            let mut state = self.state();
            for (id, at) in used {
                if pending.get(&id) == Some(&at) {
                    pending.remove(&id);
                }
                if let Some(token) = state.tokens.iter_mut().find(|t| t.id == id) {
                    token.last_used_at = Some(at);
                }
            }
        }
    }
}

/// A store URL for logs: without a password.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// How long a login waits for the store to say whether it knows a secret this replica does
/// not (a token another replica made in the last [`SYNC_INTERVAL`]).
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The store as an identity source, asked after gateway.yaml's credentials failed: the
/// tokens it already holds are in the merged directory (so they never get here); a secret it
/// does not know is looked up in the store by digest, so a token made on another replica
/// works at once. A store that does not answer says `NotMine`: the login fails as it would
/// have (gateway.yaml's credentials are never held up by the store).
impl crate::auth::identity::IdentitySource for StoreMirror {
    fn name(&self) -> &str {
        "store"
    }

    fn authenticate<'a>(
        &'a self,
        credentials: &'a crate::auth::credentials::BasicCredentials,
        now: OffsetDateTime,
    ) -> crate::auth::identity::BoxFuture<'a, crate::auth::identity::Lookup> {
        use crate::auth::credentials::{namespace_principal, token_digest, token_principal};
        use crate::auth::identity::Lookup;
        Box::pin(async move {
            let digest = token_digest(&credentials.secret);
            if self.state().by_digest.contains_key(&digest) {
                return Lookup::NotMine;
            }
            let Ok(store) = self.store() else {
                return Lookup::NotMine;
            };
            let found =
                match tokio::time::timeout(LOOKUP_TIMEOUT, store.find_by_digest(&digest)).await {
                    Ok(Ok(Some(token))) => token,
                    Ok(Ok(None)) => return Lookup::NotMine,
                    Ok(Err(error)) => {
                        tracing::debug!("token store lookup failed: {error}");
                        return Lookup::NotMine;
                    }
                    Err(_) => return Lookup::NotMine,
                };
            tracing::debug!(
                token_id = found.id,
                "a token made on another replica, fetched from the store"
            );
            self.apply(move |tokens| {
                if !tokens.iter().any(|t| t.id == found.id) {
                    tokens.push(found);
                }
            });
            let directory = self.directory();
            if let Some(holder) = directory.token_by_digest(&digest) {
                return match token_principal(&directory, holder, now) {
                    Ok(principal) => Lookup::Found(principal),
                    Err(failure) => Lookup::Refused(failure),
                };
            }
            let deploy = directory
                .namespace_tokens(&credentials.username)
                .iter()
                .find(|t| t.role.is_none() && t.digest == digest);
            match deploy.map(|t| namespace_principal(t, now)) {
                Some(Ok(principal)) => Lookup::Found(principal),
                Some(Err(failure)) => Lookup::Refused(failure),
                None => Lookup::NotMine,
            }
        })
    }

    fn health(&self) -> Health {
        StoreMirror::health(self)
    }
}
