-- A service token speaks for one receiving provider: the statuses of referrals sent to that
-- provider are its to set (HL7 BSeR's recipient side). NULL for every other token.
ALTER TABLE tokens ADD COLUMN provider_id text;
