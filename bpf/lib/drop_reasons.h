/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Drop reasons: Cilium's codes, identical to Hubble's flow.proto DropReason
 * (a drop reason N is returned internally as -N). Only the ones this datapath
 * emits today are listed; the Rust DropReason enum knows them all.
 */
#pragma once

#define DROP_POLICY -133           /* POLICY_DENIED: default deny, nothing allowed */
#define DROP_POLICY_DENY -181      /* POLICY_DENY: an explicit deny entry matched */
#define DROP_INVALID -134          /* INVALID_PACKET_DROPPED */
#define DROP_CT_INVALID_HDR -135   /* CT_TRUNCATED_OR_INVALID_HEADER */
#define DROP_CT_MAP_INSERT -155    /* CT_MAP_INSERTION_FAILED */
#define DROP_INVALID_EXTHDR -156   /* INVALID_IPV6_EXTENSION_HEADER */
#define DROP_NO_SERVICE -158       /* SERVICE_BACKEND_NOT_FOUND */
#define DROP_WRITE_ERROR -141      /* ERROR_WRITING_TO_PACKET */
#define DROP_CSUM_L3 -153          /* ERROR_WHILE_CORRECTING_L3_CHECKSUM */
#define DROP_CSUM_L4 -154          /* ERROR_WHILE_CORRECTING_L4_CHECKSUM */
#define DROP_PROXYMAP -161         /* FAILED_TO_INSERT_INTO_PROXYMAP */
#define DROP_SOCKET_LOOKUP -178    /* SOCKET_LOOKUP_FAILED: no L7 proxy socket for a redirected packet */
#define DROP_SOCKET_ASSIGN -179    /* SOCKET_ASSIGN_FAILED */
#define DROP_PROXY_UNSUPPORTED -180 /* proxy redirection not supported for protocol */
#define DROP_UNENCRYPTED -195      /* UNENCRYPTED_TRAFFIC: strict mode, would leave in clear */
