//! The OpenAPI document served at `/openapi.json`, generated from the handlers' annotations.

use utoipa::Modify;
use utoipa::openapi::RefOr;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

use crate::devices::{DeviceProtocol, DeviceView};
use crate::error::{ErrorBody, UNAUTHORIZED_CODES};
use crate::growth::{DiscountView, PromoRequest, PromoResponse, ReferralsView};
use crate::locations::{LocationRequest, LocationView};
use crate::renewal::{CardView, RenewalView};
use crate::stars::{StarsInvoiceRequest, StarsInvoiceResponse};
use crate::user::{
    AddDeviceRequest, CreatePaymentRequest, MeResponse, PaymentResponse, PlanView, QrFormat,
    SubscriptionView, UpdateDeviceRequest, UsageView, UserView,
};

/// `Authorization: tma <initData>`.
struct TmaAuth;

impl Modify for TmaAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "tma",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`tma <initData>`: Telegram Mini App initData, validated with the bot token",
            ))),
        );
    }
}

/// Every 401 response described with the codes it may carry ([`UNAUTHORIZED_CODES`]).
struct UnauthorizedCodes;

impl Modify for UnauthorizedCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let codes: Vec<String> = UNAUTHORIZED_CODES
            .iter()
            .map(|(code, when)| format!("`{code}`: {when}"))
            .collect();
        let description = format!("Telegram initData refused. {}.", codes.join("; "));
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                if let Some(RefOr::T(response)) = operation.responses.responses.get_mut("401") {
                    response.description.clone_from(&description);
                }
            }
        }
    }
}

#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(title = "wgsub API", description = "The wgsub Mini App API and YooKassa webhook."),
    paths(
        crate::user::me,
        crate::user::plans,
        crate::locations::locations,
        crate::locations::put_location,
        crate::user::create_payment,
        crate::growth::redeem_promo,
        crate::growth::waiting_discount,
        crate::growth::referrals,
        crate::renewal::renewal,
        crate::renewal::disable_renewal,
        crate::stars::create_stars_invoice,
        crate::user::list_peers,
        crate::user::add_peer,
        crate::user::update_peer,
        crate::device_actions::delete_peer,
        crate::device_actions::rotate_peer,
        crate::user::peer_config,
        crate::user::peer_qr,
        crate::webhook::yookassa,
    ),
    components(schemas(
        PromoRequest, PromoResponse, DiscountView, ReferralsView,
        ErrorBody, MeResponse, UserView, SubscriptionView, UsageView, DeviceView, DeviceProtocol,
        PlanView,
        CreatePaymentRequest, PaymentResponse, AddDeviceRequest, UpdateDeviceRequest, QrFormat,
        StarsInvoiceRequest, StarsInvoiceResponse, RenewalView, CardView,
        LocationView, LocationRequest,
    )),
    modifiers(&TmaAuth, &UnauthorizedCodes),
)]
pub struct ApiDoc;
