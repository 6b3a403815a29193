package main

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/enclavekit/kmsproxy/internal/policy"
)

// endpointRegionPattern finds the region in the host name of an AWS KMS
// endpoint: kms.REGION.amazonaws.com, kms-fips.REGION.amazonaws.com,
// kms.REGION.amazonaws.com.cn, kms.REGION.api.aws (dual-stack), and VPC
// endpoints such as vpce-0123-abcd.kms.REGION.vpce.amazonaws.com (AWS
// General Reference, "AWS Key Management Service endpoints and quotas";
// AWS PrivateLink, "VPC endpoint DNS names").
var endpointRegionPattern = regexp.MustCompile(`(?:^|\.)kms(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-[0-9]{1,2})\.(?:vpce\.)?(?:amazonaws\.com|amazonaws\.com\.cn|api\.aws)$`)

// endpointRegion returns the region an AWS KMS endpoint URL names, or
// false for an endpoint that names none (devkms on localhost, a private
// name).
func endpointRegion(endpoint string) (string, bool) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false
	}
	m := endpointRegionPattern.FindStringSubmatch(strings.ToLower(u.Hostname()))
	if m == nil {
		return "", false
	}
	return m[1], true
}

// checkRegions refuses to start when the policy pins regions (kms.regions)
// and the region kmsproxyd would sign for, or the region its endpoint
// names, is another. regionSource says where the region came from.
func checkRegions(pol *policy.Policy, region, regionSource, endpoint string) error {
	if err := pol.AllowRegion(region, regionSource); err != nil {
		return err
	}
	if r, ok := endpointRegion(endpoint); ok {
		if err := pol.AllowRegion(r, "the KMS endpoint "+endpoint); err != nil {
			return err
		}
	}
	return nil
}
