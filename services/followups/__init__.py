"""Follow-ups: what good service promises after each touchpoint, made from policies, due on time, never twice."""
