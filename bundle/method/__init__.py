"""The paper's method: networks (Table 1, eq. 3), losses (eq. 1, 2, 5-7) and symmetric MC-dropout uncertainty
(eq. 8-10, Algorithm 1, §4.4). Imports nothing of the bundle but ``bundle.constants``."""
