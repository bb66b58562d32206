package dataplane

//go:generate sh -c "go tool bpf2go -cc ${DOLLAR}{CLANG:-clang-19} -target bpfel -type vigil_event -type vigil_counter -type prefix_key -type rule_span -type egress_rule -type ingress_rule -type port_range -type exempt_net -type table_settings -type scope_info -type conn_key -type pending_egress -type pending_ingress -type cut_key -type kill_target -type exe_key -type task_record bpf ../../bpf/vigil.c -- -O2 -g -Wall -Werror -I../../bpf"
