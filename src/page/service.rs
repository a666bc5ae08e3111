//! [`TokenBackend`] over the token service ([`crate::api::service::TokenService`]): the
//! page makes, lists and revokes exactly what the REST API does, under the same rules
//! (GitLab's), audited by the service.
//!
//! The page shows a user only their own personal tokens, administrators included: an id
//! that is not among them is "no such token", whoever's it is.

use crate::api::service::{
    Actor, CreatedToken, Namespace as ServiceNamespace, NewToken as ServiceNew, ServiceError,
    Source, TokenService, TokenView,
};
use crate::auth::credentials::Principal;
use crate::auth::directory::NamespaceKind;
use crate::auth::identity::BoxFuture;

use super::backend::{
    config_still_valid, BackendError, Created, Namespace, NamespaceTokenKind, NewToken,
    TokenBackend, TokenRow,
};

pub struct ServiceTokens {
    service: TokenService,
}

impl ServiceTokens {
    pub fn new(service: TokenService) -> std::sync::Arc<ServiceTokens> {
        std::sync::Arc::new(ServiceTokens { service })
    }

    fn own_tokens(&self, actor: &Actor) -> Result<Vec<TokenView>, BackendError> {
        let mut all = self.service.list_personal(actor, None).map_err(error)?;
        all.retain(|t| t.username == actor.username);
        Ok(all)
    }

    fn list(
        &self,
        actor: &Actor,
        namespace: &ServiceNamespace,
        kind: NamespaceTokenKind,
    ) -> Result<Vec<TokenView>, BackendError> {
        match kind {
            NamespaceTokenKind::Deploy => self.service.list_deploy(actor, namespace),
            NamespaceTokenKind::Access => self.service.list_access(actor, namespace),
        }
        .map_err(error)
    }
}

fn actor(principal: &Principal) -> Result<Actor, BackendError> {
    Actor::of(principal)
        .filter(|a| a.bot.is_none())
        .ok_or(BackendError::Forbidden)
}

fn namespace(namespace: &Namespace) -> ServiceNamespace {
    match namespace.kind {
        NamespaceKind::Project => ServiceNamespace::Project(namespace.path.clone()),
        NamespaceKind::Group => ServiceNamespace::Group(namespace.path.clone()),
    }
}

fn error(error: ServiceError) -> BackendError {
    match error {
        ServiceError::Invalid(text) | ServiceError::BadRequest(text) => BackendError::Invalid(text),
        ServiceError::NotFound(_) => BackendError::NotFound,
        ServiceError::Forbidden | ServiceError::Unauthorized => BackendError::Forbidden,
        ServiceError::Unavailable(text) => BackendError::Unavailable(text),
    }
}

fn row(view: TokenView) -> TokenRow {
    TokenRow {
        id: view.id,
        name: view.name,
        username: Some(view.username),
        scopes: view.scopes,
        role: view.access_level,
        created_at: view.created_at,
        expires_at: view.expires_at,
        last_used_at: view.last_used_at,
        revoked: view.revoked,
        active: view.active,
        from_config: view.source == Source::Config,
    }
}

fn created(created: CreatedToken) -> Created {
    Created {
        username: created.token.username.clone(),
        row: row(created.token),
        secret: created.secret,
    }
}

fn new_token(new: NewToken) -> ServiceNew {
    ServiceNew {
        name: new.name,
        scopes: new.scopes,
        expires_at: new.expires_at,
        description: None,
        access_level: new.role,
        username: new.username,
    }
}

impl TokenBackend for ServiceTokens {
    fn personal_tokens<'a>(
        &'a self,
        owner: &'a Principal,
    ) -> BoxFuture<'a, Result<Vec<TokenRow>, BackendError>> {
        Box::pin(async move {
            let actor = actor(owner)?;
            Ok(self.own_tokens(&actor)?.into_iter().map(row).collect())
        })
    }

    fn create_personal<'a>(
        &'a self,
        owner: &'a Principal,
        new: NewToken,
    ) -> BoxFuture<'a, Result<Created, BackendError>> {
        Box::pin(async move {
            let actor = actor(owner)?;
            self.service
                .create_personal(&actor, &actor.username, new_token(new))
                .await
                .map(created)
                .map_err(error)
        })
    }

    fn revoke_personal<'a>(
        &'a self,
        owner: &'a Principal,
        id: u64,
    ) -> BoxFuture<'a, Result<TokenRow, BackendError>> {
        Box::pin(async move {
            let actor = actor(owner)?;
            let token = self
                .own_tokens(&actor)?
                .into_iter()
                .find(|t| t.id == id)
                .ok_or(BackendError::NotFound)?;
            self.service
                .revoke_personal(&actor, id)
                .await
                .map_err(error)?;
            Ok(row(token))
        })
    }

    fn namespace_tokens<'a>(
        &'a self,
        caller: &'a Principal,
        ns: &'a Namespace,
        kind: NamespaceTokenKind,
    ) -> BoxFuture<'a, Result<Vec<TokenRow>, BackendError>> {
        Box::pin(async move {
            let actor = actor(caller)?;
            Ok(self
                .list(&actor, &namespace(ns), kind)?
                .into_iter()
                .map(row)
                .collect())
        })
    }

    fn create_namespace_token<'a>(
        &'a self,
        caller: &'a Principal,
        ns: &'a Namespace,
        kind: NamespaceTokenKind,
        new: NewToken,
    ) -> BoxFuture<'a, Result<Created, BackendError>> {
        Box::pin(async move {
            let actor = actor(caller)?;
            let ns = namespace(ns);
            let new = new_token(new);
            match kind {
                NamespaceTokenKind::Deploy => self.service.create_deploy(&actor, &ns, new).await,
                NamespaceTokenKind::Access => self.service.create_access(&actor, &ns, new).await,
            }
            .map(created)
            .map_err(error)
        })
    }

    fn revoke_namespace_token<'a>(
        &'a self,
        caller: &'a Principal,
        ns: &'a Namespace,
        kind: NamespaceTokenKind,
        id: u64,
    ) -> BoxFuture<'a, Result<TokenRow, BackendError>> {
        Box::pin(async move {
            let actor = actor(caller)?;
            let ns = namespace(ns);
            let token = self
                .list(&actor, &ns, kind)?
                .into_iter()
                .find(|t| t.id == id)
                .ok_or(BackendError::NotFound)?;
            match kind {
                NamespaceTokenKind::Deploy => self.service.revoke_deploy(&actor, &ns, id).await,
                NamespaceTokenKind::Access => self.service.revoke_access(&actor, &ns, id).await,
            }
            .map_err(error)?;
            Ok(row(token))
        })
    }

    fn max_lifetime_days(&self) -> Option<u32> {
        u32::try_from(self.service.max_lifetime_days()).ok()
    }

    fn is_api_token(&self, secret: &str) -> bool {
        self.service.actor_for_api_token(secret, false).is_ok()
    }

    fn still_valid<'a>(&'a self, principal: &'a Principal) -> BoxFuture<'a, bool> {
        // The mirror merges the store's tokens into the directory: a revoked store token
        // is seen there as revoked, at once on this replica.
        Box::pin(async move { config_still_valid(&self.service.mirror().directory(), principal) })
    }
}
