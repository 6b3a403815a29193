// Package docs holds the tests that keep the documentation true to the
// binaries: every flag of kmsproxyd, devkms and each kmsproxyctl command is
// documented in docs/configuration.md with its real default (and, for
// kmsproxyd, its environment variable), the reference names no flag that does
// not exist, and the command lines in the docs' code blocks use only real
// commands and flags. The flags are read from each binary's -h output, so
// the test needs nothing from package main. The example seed, credentials
// and IAM policies files of docs/configuration.md are parsed and applied by
// devkms, and docs/local.md's commands are run as a user would run them.
package docs
