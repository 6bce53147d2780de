"""Prisma: not testable here. Its query engine is a binary that ``prisma`` / ``@prisma/client``
download at install time from binaries.prisma.sh, which this machine's closed network refuses.
Prisma uses named prepared statements by default; Supabase documents ``?pgbouncer=true`` on
the transaction-mode URL (port 6543), which turns them off.
Docs: https://www.prisma.io/docs/orm/prisma-client/setup-and-configuration/databases-connections/pgbouncer
"""

from lab.clients import Driver

DRIVER = Driver(
    name="prisma",
    title="Prisma ORM",
    ecosystem="npm",
    packages=(),
    docs="https://www.prisma.io/docs/orm/prisma-client/setup-and-configuration/databases-connections/pgbouncer",
    untestable="Prisma's query engine is a binary downloaded at install time (npm prisma / "
               "@prisma/client fetch it from binaries.prisma.sh), which this machine's closed "
               "network refuses; Supabase documents ?pgbouncer=true for port 6543",
    variants=(),
)
