package agent

import (
	"time"

	"github.com/vigilsec/vigil/agent/posture"
	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// Hello builds the message that opens a stream: identity, capabilities the
// kernel actually has, posture, addresses, and the state a restarted agent
// adopted (table version, last instruction).
func (a *agent) Hello() *vigilpb.Hello {
	caps := a.dp.Capabilities()
	return &vigilpb.Hello{
		Name: a.cfg.Name, AgentVersion: a.cfg.Version,
		Capabilities: &vigilpb.Capabilities{
			Hooks: caps.Hooks, Enforcement: caps.Enforcement, ExecEnforcement: caps.ExecEnforcement,
		},
		Posture:            a.currentPosture(),
		Addresses:          a.addresses(),
		TableVersion:       a.applier.Version(),
		LastInstructionSeq: a.applier.LastInstruction(),
		Scope:              a.cfg.Cgroup,
	}
}

// addresses are the --address overrides, or the namespace's addresses, at
// most posture.MaxAddresses of them: the server refuses a hello with more.
func (a *agent) addresses() []string {
	addrs := a.cfg.Addresses
	if len(addrs) == 0 {
		var err error
		if addrs, err = posture.Addresses(); err != nil {
			a.log.Warn("list addresses", "err", err)
		}
	}
	if len(addrs) > posture.MaxAddresses {
		a.log.Warn("too many addresses, reporting the first", "count", len(addrs), "kept", posture.MaxAddresses)
		addrs = addrs[:posture.MaxAddresses]
	}
	return addrs
}

// Table applies a full table from the server.
func (a *agent) Table(t *vigilpb.VerdictTable) *vigilpb.TableAck {
	ack := a.applier.ApplyTable(t)
	a.logTable(ack, t.PolicyVersion)
	return ack
}

// Diff applies a table diff from the server.
func (a *agent) Diff(d *vigilpb.TableDiff) (*vigilpb.TableAck, error) {
	ack, err := a.applier.ApplyDiff(d)
	if err != nil {
		return nil, err
	}
	a.logTable(ack, d.PolicyVersion)
	return ack, nil
}

func (a *agent) logTable(ack *vigilpb.TableAck, policy uint64) {
	if ack.Error != "" {
		a.log.Error("table rejected, previous stays", "err", ack.Error,
			"policy_version", policy, "table_version", ack.Version)
		return
	}
	t := a.applier.Table()
	a.metrics.TableVersion.Set(float64(t.Version))
	a.metrics.TableRules.WithLabelValues("egress").Set(float64(len(t.Egress)))
	a.metrics.TableRules.WithLabelValues("ingress").Set(float64(len(t.Ingress)))
	a.metrics.TableRules.WithLabelValues("kill_on_exec").Set(float64(len(t.KillOnExec)))
	a.metrics.TableRules.WithLabelValues("cut_peers").Set(float64(len(t.CutPeers)))
	a.log.Info("table applied", "policy_version", policy, "table_version", ack.Version)
}

// Instruction executes an instruction and records its outcome.
func (a *agent) Instruction(ins *vigilpb.Instruction, received time.Time) *vigilpb.InstructionAck {
	ack, err := a.applier.Execute(ins, received)
	if err != nil {
		a.log.Error("save instruction state", "err", err, "seq", ins.Seq)
	}
	outcome := vigilpb.InstructionOutcome_name[int32(ack.Outcome)]
	a.metrics.Instructions.WithLabelValues(outcome).Inc()
	a.log.Info("instruction executed", "seq", ins.Seq, "kind", ins.Kind.String(), "outcome", outcome,
		"pid", ins.Pid, "latency_us", ack.LatencyUs)
	return ack
}

// Online switches the table between its online and fail-mode forms.
func (a *agent) Online(up bool) {
	if err := a.applier.SetOnline(up); err != nil {
		a.log.Error("switch fail mode", "err", err, "online", up)
	}
}
