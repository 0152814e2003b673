-- A billing contact row's `contact` was jsonb: PostgreSQL parsed every contact into its binary
-- form on the way in, and that parse was most of the billing projection's write cost. Loading
-- 300,000 such rows by COPY took 4.3 s into jsonb, 2.8 s into json and 2.3 s into text
-- (2026-12-01). Nothing queries inside a contact in SQL: readers aggregate the rows whole
-- (`json_agg`) and decode them in the application, and a void rewrites one row. json keeps the
-- text as written and still checks that it is JSON.
ALTER TABLE billing_contacts ALTER COLUMN contact TYPE json USING contact::json;
