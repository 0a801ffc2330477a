//! End-to-end tests of the sightline server and binary.

mod binary;
mod exporters;
mod http;
mod support;
mod trace;
