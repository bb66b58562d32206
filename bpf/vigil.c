//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* The Vigil data plane, compiled as one object so every program shares the
 * maps of maps.h. Each included file holds one hook family. */
#include "common.h"
#include "maps.h"

#include "observe.c"
#include "egress.c"
#include "ingress.c"
#include "cut.c"
#include "tasks.c"

/* Inner-map values, iterator output and event records reach BTF only
 * through these declarations; bpf2go needs them complete to generate their Go layouts. */
const struct prefix_key *unused_prefix_key __attribute__((unused));
const struct rule_span *unused_rule_span __attribute__((unused));
const struct egress_rule *unused_egress_rule __attribute__((unused));
const struct ingress_rule *unused_ingress_rule __attribute__((unused));
const struct task_record *unused_task_record __attribute__((unused));
const struct vigil_event *unused_vigil_event __attribute__((unused));
const enum vigil_counter *unused_vigil_counter __attribute__((unused));

/* GPL-compatible: bpf_send_signal and bpf_sock_destroy require it. */
char __license[] SEC("license") = "Dual MIT/GPL";
