pub mod model;
pub mod event;
pub mod state;
pub mod decide;
pub mod store;
pub mod ledger;
pub mod runner;
