"use strict";

// Invoices are kept for the tax office: this migration is never undone.
module.exports = {
  async up(queryInterface, Sequelize) {
    await queryInterface.createTable("invoices", {
      id: { type: Sequelize.INTEGER, primaryKey: true, autoIncrement: true },
      customer_id: { type: Sequelize.INTEGER, allowNull: false, references: { model: "customers", key: "id" } },
      total_cents: { type: Sequelize.BIGINT, allowNull: false },
    });
  },
  async down() {},
};
