//! What can be queried: objects, their fields with types, and relationships between them.
//!
//! This is the simulator's describe information. SOQL name resolution (case-insensitive, with
//! canonical names in responses), filterability and literal type checks all read from here.
//! Reading values out of org records is the view module's business.

/// The queryable objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// UserLicense.
    UserLicense,
    /// Profile.
    Profile,
    /// User.
    User,
    /// PermissionSetLicense.
    PermissionSetLicense,
    /// PackageLicense.
    PackageLicense,
    /// PermissionSetLicenseAssign.
    PermissionSetLicenseAssign,
    /// UserPackageLicense.
    UserPackageLicense,
    /// LoginHistory.
    LoginHistory,
}

/// The SOAP type of a field, which decides the JSON type and which literals compare with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// The record's own id.
    Id,
    /// An id of another record.
    Reference,
    /// Free text.
    Text,
    /// A picklist value.
    Picklist,
    /// true or false.
    Boolean,
    /// An integer.
    Int,
    /// A UTC date and time.
    DateTime,
    /// A calendar date.
    Date,
}

impl FieldType {
    /// The name Salesforce uses in filter type errors.
    pub fn soap_name(self) -> &'static str {
        match self {
            Self::Id | Self::Reference => "id",
            Self::Text | Self::Picklist => "string",
            Self::Boolean => "boolean",
            Self::Int => "int",
            Self::DateTime => "dateTime",
            Self::Date => "date",
        }
    }
}

/// A field of an object.
#[derive(Debug)]
pub struct FieldDef {
    /// Canonical API name.
    pub name: &'static str,
    /// Type.
    pub ty: FieldType,
    /// Whether WHERE and ORDER BY may use it.
    pub filterable: bool,
}

/// A lookup from one object to another, followed with a dotted path.
#[derive(Debug)]
pub struct RelDef {
    /// Relationship name, for example `Profile` or `Manager`.
    pub name: &'static str,
    /// The reference field holding the related id, for example `ProfileId`.
    pub id_field: &'static str,
    /// The related object.
    pub target: ObjectKind,
}

/// An object's describe information.
#[derive(Debug)]
pub struct ObjectDef {
    /// Which object.
    pub kind: ObjectKind,
    /// Canonical API name.
    pub name: &'static str,
    /// Fields.
    pub fields: &'static [FieldDef],
    /// Relationships.
    pub relationships: &'static [RelDef],
}

impl ObjectDef {
    /// Finds a field by name, ignoring case.
    pub fn field(&self, name: &str) -> Option<&'static FieldDef> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// Finds a relationship by name, ignoring case.
    pub fn relationship(&self, name: &str) -> Option<&'static RelDef> {
        self.relationships
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
    }
}

/// A filterable field.
const fn f(name: &'static str, ty: FieldType) -> FieldDef {
    FieldDef {
        name,
        ty,
        filterable: true,
    }
}

/// A field Salesforce refuses in WHERE and ORDER BY.
const fn unfilterable(name: &'static str, ty: FieldType) -> FieldDef {
    FieldDef {
        name,
        ty,
        filterable: false,
    }
}

use FieldType::{Boolean, Date, DateTime, Id, Int, Picklist, Reference, Text};

static USER_LICENSE_FIELDS: [FieldDef; 13] = [
    f("Id", Id),
    f("LicenseDefinitionKey", Text),
    f("Name", Text),
    f("MasterLabel", Text),
    f("Status", Picklist),
    f("TotalLicenses", Int),
    f("UsedLicenses", Int),
    f("UsedLicensesLastUpdated", DateTime),
    f("MonthlyLoginsEntitlement", Int),
    f("MonthlyLoginsUsed", Int),
    f("CreatedDate", DateTime),
    f("LastModifiedDate", DateTime),
    f("SystemModstamp", DateTime),
];

static PROFILE_FIELDS: [FieldDef; 3] =
    [f("Id", Id), f("Name", Text), f("UserLicenseId", Reference)];

static PROFILE_RELS: [RelDef; 1] = [RelDef {
    name: "UserLicense",
    id_field: "UserLicenseId",
    target: ObjectKind::UserLicense,
}];

static USER_FIELDS: [FieldDef; 12] = [
    f("Id", Id),
    f("Username", Text),
    f("Name", Text),
    f("Email", Text),
    f("IsActive", Boolean),
    f("UserType", Picklist),
    f("LastLoginDate", DateTime),
    f("ProfileId", Reference),
    f("ManagerId", Reference),
    f("CreatedDate", DateTime),
    f("LastModifiedDate", DateTime),
    f("SystemModstamp", DateTime),
];

static USER_RELS: [RelDef; 2] = [
    RelDef {
        name: "Profile",
        id_field: "ProfileId",
        target: ObjectKind::Profile,
    },
    RelDef {
        name: "Manager",
        id_field: "ManagerId",
        target: ObjectKind::User,
    },
];

static PSL_FIELDS: [FieldDef; 12] = [
    f("Id", Id),
    f("DeveloperName", Text),
    f("MasterLabel", Text),
    f("PermissionSetLicenseKey", Text),
    f("Status", Picklist),
    f("TotalLicenses", Int),
    f("UsedLicenses", Int),
    f("ExpirationDate", Date),
    f("IsAvailableForIntegrations", Boolean),
    f("CreatedDate", DateTime),
    f("LastModifiedDate", DateTime),
    f("SystemModstamp", DateTime),
];

static PACKAGE_FIELDS: [FieldDef; 11] = [
    f("Id", Id),
    f("NamespacePrefix", Text),
    f("AllowedLicenses", Int),
    f("UsedLicenses", Int),
    f("Status", Picklist),
    f("ExpirationDate", DateTime),
    f("IsProvisioned", Boolean),
    f("IsAvailableForIntegrations", Boolean),
    f("CreatedDate", DateTime),
    f("LastModifiedDate", DateTime),
    f("SystemModstamp", DateTime),
];

static PSL_ASSIGN_FIELDS: [FieldDef; 7] = [
    f("Id", Id),
    f("AssigneeId", Reference),
    f("PermissionSetLicenseId", Reference),
    f("IsRevoked", Boolean),
    f("CreatedDate", DateTime),
    f("LastModifiedDate", DateTime),
    f("SystemModstamp", DateTime),
];

static PSL_ASSIGN_RELS: [RelDef; 2] = [
    RelDef {
        name: "Assignee",
        id_field: "AssigneeId",
        target: ObjectKind::User,
    },
    RelDef {
        name: "PermissionSetLicense",
        id_field: "PermissionSetLicenseId",
        target: ObjectKind::PermissionSetLicense,
    },
];

static USER_PACKAGE_FIELDS: [FieldDef; 7] = [
    f("Id", Id),
    f("UserId", Reference),
    f("PackageLicenseId", Reference),
    f("IsRevoked", Boolean),
    f("CreatedDate", DateTime),
    f("LastModifiedDate", DateTime),
    f("SystemModstamp", DateTime),
];

// LoginHistory: only Id, UserId, LoginTime, LoginType, LoginUrl and CountryIso (of the fields
// simulated here) are filterable in Salesforce; the rest are refused in WHERE and ORDER BY.
static LOGIN_HISTORY_FIELDS: [FieldDef; 14] = [
    f("Id", Id),
    f("UserId", Reference),
    f("LoginTime", DateTime),
    unfilterable("Status", Text),
    unfilterable("Application", Text),
    f("LoginType", Picklist),
    unfilterable("LoginSubType", Picklist),
    f("LoginUrl", Text),
    unfilterable("SourceIp", Text),
    unfilterable("Browser", Text),
    unfilterable("Platform", Text),
    unfilterable("ApiType", Text),
    unfilterable("ApiVersion", Text),
    f("CountryIso", Picklist),
];

/// Every queryable object.
pub static OBJECTS: [ObjectDef; 8] = [
    ObjectDef {
        kind: ObjectKind::UserLicense,
        name: "UserLicense",
        fields: &USER_LICENSE_FIELDS,
        relationships: &[],
    },
    ObjectDef {
        kind: ObjectKind::Profile,
        name: "Profile",
        fields: &PROFILE_FIELDS,
        relationships: &PROFILE_RELS,
    },
    ObjectDef {
        kind: ObjectKind::User,
        name: "User",
        fields: &USER_FIELDS,
        relationships: &USER_RELS,
    },
    ObjectDef {
        kind: ObjectKind::PermissionSetLicense,
        name: "PermissionSetLicense",
        fields: &PSL_FIELDS,
        relationships: &[],
    },
    ObjectDef {
        kind: ObjectKind::PackageLicense,
        name: "PackageLicense",
        fields: &PACKAGE_FIELDS,
        relationships: &[],
    },
    ObjectDef {
        kind: ObjectKind::PermissionSetLicenseAssign,
        name: "PermissionSetLicenseAssign",
        fields: &PSL_ASSIGN_FIELDS,
        relationships: &PSL_ASSIGN_RELS,
    },
    ObjectDef {
        kind: ObjectKind::UserPackageLicense,
        name: "UserPackageLicense",
        fields: &USER_PACKAGE_FIELDS,
        relationships: &[],
    },
    ObjectDef {
        kind: ObjectKind::LoginHistory,
        name: "LoginHistory",
        fields: &LOGIN_HISTORY_FIELDS,
        relationships: &[],
    },
];

/// Finds an object by name, ignoring case.
pub fn object_by_name(name: &str) -> Option<&'static ObjectDef> {
    OBJECTS.iter().find(|o| o.name.eq_ignore_ascii_case(name))
}

/// The describe information of an object.
pub fn object(kind: ObjectKind) -> &'static ObjectDef {
    OBJECTS
        .iter()
        .find(|o| o.kind == kind)
        .expect("every ObjectKind has an entry in OBJECTS")
}
